"""The face tracker on a real photographic face, a small face, no face, and jitter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub.face import landmarker
from rtdub.face.smoothing import OneEuroFilter
from rtdub.face.tracker import FaceTracker, TrackerConfig, choose_face, parse_face_choice
from rtdub.measure import samples


@pytest.fixture(scope="module")
def tracker() -> Iterator[FaceTracker]:
    t = FaceTracker()
    yield t
    t.close()


def test_finds_the_portrait_face(tracker: FaceTracker) -> None:
    tracker.reset()
    img = samples.portrait()
    obs = tracker.track(img, 0.0)
    assert obs is not None
    lo, hi = obs.landmarks.min(0), obs.landmarks.max(0)
    # the astronaut's face lies in this box of skimage's 512×512 image
    assert 150 < lo[0] and hi[0] < 310 and 40 < lo[1] and hi[1] < 210
    assert 40 < obs.face_size < 110
    # anatomy: eyes above the nose tip, nose tip above the mouth, mouth above the chin
    y = obs.landmarks[:, 1]
    assert y[33] < y[1] < y[13] < y[152]


def test_tracks_through_head_motion(tracker: FaceTracker) -> None:
    tracker.reset()
    frames = list(samples.head_motion(samples.portrait(), 20, 25.0, amplitude=2.0))
    found = [tracker.track(f, i / 25) for i, f in enumerate(frames)]
    assert all(o is not None for o in found)
    # the landmarks follow the motion: the nose tip moves by more than a pixel
    nose = np.array([o.landmarks[1] for o in found if o is not None])
    assert np.ptp(nose, axis=0).max() > 1.0


def test_small_face_is_found_through_the_full_range_path(tracker: FaceTracker) -> None:
    tracker.reset()
    canvas = np.full((720, 1280, 3), 40, np.uint8)
    small = cv2.resize(samples.portrait(), (300, 300), interpolation=cv2.INTER_AREA)
    canvas[400:700, 900:1200] = small  # face ~ 10 % of the frame height
    obs = tracker.track(canvas, 0.0)
    assert obs is not None
    c = obs.landmarks.mean(0)
    assert 900 < c[0] < 1200 and 400 < c[1] < 700


def test_no_face_returns_none(tracker: FaceTracker) -> None:
    tracker.reset()
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    assert tracker.track(img, 0.0) is None


def test_one_euro_filter_removes_jitter_and_follows_motion() -> None:
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.5, beta=2.0)
    t = np.arange(100) / 25
    still = 5.0 + 0.05 * rng.standard_normal(100)
    out = np.array([f(np.array([x]), ti)[0] for x, ti in zip(still, t, strict=True)])
    assert out[20:].std() < 0.5 * still[20:].std()
    f.reset()
    ramp = 10.0 * t  # fast motion: lag must stay small
    out = np.array([f(np.array([x]), ti)[0] for x, ti in zip(ramp, t, strict=True)])
    assert np.abs(out[20:] - ramp[20:]).max() < 0.5


def test_smoothed_landmarks_jitter_less_and_stay_on_the_face() -> None:
    rng = np.random.default_rng(0)
    base = samples.portrait()
    raw, smooth = [], []
    with FaceTracker() as tr:
        for i in range(30):
            noisy = np.clip(base.astype(int) + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
            o = tr.track(noisy, i / 25)
            assert o is not None
            raw.append(o.raw)
            smooth.append(o.landmarks)
    r, s = np.array(raw)[10:], np.array(smooth)[10:]
    step_raw = np.linalg.norm(np.diff(r, axis=0), axis=-1).mean()
    step_smooth = np.linalg.norm(np.diff(s, axis=0), axis=-1).mean()
    assert step_smooth < 0.8 * step_raw  # less frame-to-frame jitter
    assert np.linalg.norm(s - r, axis=-1).mean() < 1.5  # but no drift away from the face


@pytest.mark.shared
def test_real_portraits_from_shared_media(shared_media: Path) -> None:
    """Photos and paintings in ../shared/media/faces (skipped when it is absent)."""
    files = sorted((shared_media / "faces").glob("*.png")) + sorted((shared_media / "faces").glob("*.jp*g"))
    assert files
    found = 0
    for f in files:
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        with FaceTracker() as tr:
            obs = tr.track(img, 0.0)
        if obs is not None:
            found += 1
            y = obs.landmarks[:, 1]
            assert y[33] < y[13] < y[152]
    assert found >= 0.8 * len(files), f"{found}/{len(files)}"


def _rotated(img: np.ndarray, deg: float, shift: tuple[float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    m[:, 2] += shift
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_direct_landmark_model_matches_mediapipes_graph() -> None:
    """Tracking with the landmark model run directly gives mediapipe's graph's landmarks
    (same model, same crop), frame after frame, through head motion and roll."""
    if not landmarker.available():
        pytest.skip("ai-edge-litert is not installed")
    base = samples.portrait()
    frames = [_rotated(base, 12 * np.sin(i / 4), (3 * i, 2 * np.cos(i / 3))) for i in range(24)]
    runs = {}
    for direct in (False, True):
        with FaceTracker(TrackerConfig(direct=direct, smooth=False)) as t:
            runs[direct] = [t.track(f, i / 25) for i, f in enumerate(frames)]
            used = t.direct_frames
        if direct:
            assert used == len(frames) - 1  # every frame after the first was tracked directly
        else:
            assert used == 0
    errors = []
    for a, b in zip(runs[True], runs[False], strict=True):
        assert a is not None and b is not None
        errors.append(np.abs(a.raw - b.raw).mean() / b.face_size)
    assert max(errors) < 2e-3, errors  # 0.2 % of the eye distance: float noise, not a different crop


def test_direct_tracking_hands_back_to_detection_when_the_face_leaves() -> None:
    if not landmarker.available():
        pytest.skip("ai-edge-litert is not installed")
    face = samples.portrait()
    blank = np.full_like(face, 90)
    with FaceTracker(TrackerConfig(direct=True)) as t:
        seq = [face, face, blank, blank, np.roll(face, 60, axis=1), np.roll(face, 60, axis=1)]
        found = [t.track(f, i / 25) for i, f in enumerate(seq)]
        assert [o is not None for o in found] == [True, True, False, False, True, True]
        assert t.direct_frames == 2  # frames 1 and 5; the others needed the graph
        moved = found[5]
        assert moved is not None and found[0] is not None
        assert abs((moved.raw[1, 0] - found[0].raw[1, 0]) - 60) < 3  # found at its new place


def test_roi_matches_mediapipes_rules() -> None:
    """The crop: landmark box × 1.5, square on the long side, rotated by the eye line; the
    crop matrix maps the ROI centre to the crop centre and the eye line onto a level line."""
    pts = np.array([[100.0, 50.0], [300.0, 130.0]])
    full = np.zeros((468, 2))
    full[:] = (200, 90)
    full[0], full[1] = pts
    full[landmarker.EYE_START] = (150, 80)
    full[landmarker.EYE_END] = (250, 100)
    roi = landmarker.roi_from_landmarks(full)
    assert (roi.cx, roi.cy) == (200.0, 90.0)
    assert roi.side == pytest.approx(200 * 1.5)
    assert roi.angle == pytest.approx(np.arctan2(20, 100))
    m = landmarker.crop_matrix(roi)
    c = m[:, :2] @ np.array([roi.cx, roi.cy]) + m[:, 2]
    assert c == pytest.approx([96.0, 96.0])
    eyes = (m[:, :2] @ full[[landmarker.EYE_START, landmarker.EYE_END]].T).T + m[:, 2]
    assert eyes[0, 1] == pytest.approx(eyes[1, 1])  # level in the crop
    # to_frame inverts the crop matrix exactly
    np.testing.assert_allclose(landmarker.to_frame(eyes, roi), full[[landmarker.EYE_START, landmarker.EYE_END]])


# --- several faces -------------------------------------------------------------------------


def two_faces() -> np.ndarray:
    """1024×512: the portrait (face at x≈230) and, to its right, a 400 px mirrored copy (face
    at x≈735, nearer the centre, smaller)."""
    img = np.full((512, 1024, 3), 60, np.uint8)
    img[:, :512] = samples.portrait()
    img[56:456, 512:912] = cv2.resize(samples.portrait(), (400, 400), interpolation=cv2.INTER_AREA)[:, ::-1]
    return img


@pytest.mark.parametrize(("face", "x"), [("largest", 230), ("center", 735), (0, 230), (1, 735), (2, None)])
def test_the_chosen_face_is_followed(face: str | int, x: float | None) -> None:
    img = two_faces()
    with FaceTracker(TrackerConfig(face=face, recount_every=0.0)) as t:
        found = [t.track(img, i / 25) for i in range(4)]
        if x is None:  # an index past the faces found: none to follow
            assert found == [None] * 4
            return
        assert all(o is not None and abs(o.landmarks.mean(0)[0] - x) < 40 for o in found), face
        assert (t.frames, t.multi_face_frames, t.most_faces) == (4, 4, 2)


def test_one_face_is_not_counted_as_several() -> None:
    with FaceTracker(TrackerConfig(recount_every=0.0)) as t:
        assert all(t.track(samples.portrait(), i / 25) is not None for i in range(4))
        assert (t.frames, t.multi_face_frames, t.most_faces) == (4, 0, 1)


def test_choose_face_and_parse_face_choice() -> None:
    boxes = [(600.0, 100.0, 700.0, 200.0), (0.0, 0.0, 300.0, 300.0), (450.0, 200.0, 550.0, 300.0)]
    assert choose_face(boxes, "largest", 1000, 500) == 1
    assert choose_face(boxes, "center", 1000, 500) == 2
    assert [choose_face(boxes, i, 1000, 500) for i in range(4)] == [1, 2, 0, None]  # from the left
    assert choose_face([], "largest", 10, 10) is None
    assert [parse_face_choice(s) for s in ("largest", "Center", "centre", "0", "12")] == [
        "largest", "center", "center", 0, 12,
    ]  # fmt: skip
    for bad in ("left", "-1", "1.5", ""):
        with pytest.raises(ValueError, match="largest, center or a face's index"):
            parse_face_choice(bad)
    with pytest.raises(ValueError):
        TrackerConfig(face=-1)
