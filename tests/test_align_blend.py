"""Alignment round trip, mask geometry and the locality of the paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rtdub.face import align
from rtdub.render import blend


def template_landmarks(matrix: np.ndarray) -> np.ndarray:
    """(468, 2) landmarks whose rigid points are the template moved by ``matrix`` (canonical
    -> frame); the other points are arbitrary."""
    pts = np.zeros((468, 2))
    pts[align.RIGID_IDX] = align.apply(matrix, align.RIGID_PTS)
    return pts


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def test_umeyama_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 2))
    m = similarity(2.5, 17, 3.0, -4.0)
    got = align.umeyama(src, align.apply(m, src))
    np.testing.assert_allclose(got, m, atol=1e-9)


def test_estimate_maps_template_to_canonical_crop() -> None:
    m = similarity(120.0, -8.0, 300.0, 200.0)  # a face 120 px between the eyes, tilted
    al = align.estimate(template_landmarks(m), 96)
    # the rigid points land where the canonical crop puts them, whatever the pose
    expected = align.apply(align.canonical_to_crop(96), align.RIGID_PTS)
    np.testing.assert_allclose(align.apply(al.matrix, align.apply(m, align.RIGID_PTS)), expected, atol=1e-6)
    assert al.scale == pytest.approx(96 / align.CROP_SIDE / 120.0, rel=1e-6)


def test_alignment_round_trip_restores_the_face_region() -> None:
    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    m = similarity(90.0, 6.0, 320.0, 200.0)
    al = align.estimate(template_landmarks(m), 256)  # upsampling crop: lossless-ish round trip
    crop = align.warp_to_crop(frame, al)
    back = cv2.warpAffine(crop, al.inverse, (640, 480), flags=cv2.INTER_LINEAR)
    # compare inside the face region, away from the crop border
    inner = np.zeros((256, 256), np.uint8)
    inner[20:-20, 20:-20] = 255
    region = cv2.warpAffine(inner, al.inverse, (640, 480), flags=cv2.INTER_NEAREST) > 0
    diff = np.abs(back.astype(int) - frame.astype(int))[region]
    assert region.sum() > 10000
    assert diff.mean() < 2.0
    assert np.percentile(diff, 99) < 12


def test_mask_geometry() -> None:
    fm = blend.face_mask(96)
    assert fm.soft.shape == fm.hidden.shape == (96, 96)
    assert fm.soft.max() == pytest.approx(1.0, abs=1e-3) and fm.soft.min() == 0.0
    # feathered: zero on the crop border, a band of partial weights
    assert fm.soft[0].max() == 0 and fm.soft[-1].max() == 0 and fm.soft[:, 0].max() == 0
    assert ((fm.soft > 0.05) & (fm.soft < 0.95)).sum() > 100
    # the generator's pose input hides everything the blend can show
    assert not np.any((fm.soft > 0) & ~fm.hidden)
    # lower face only: nothing above the middle of the crop
    assert fm.soft[:40].max() == 0
    x0, y0, x1, y1 = fm.bbox
    assert 0 < x0 < x1 <= 96 and 40 < y0 < y1 <= 96


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paste_changes_only_masked_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    before = frame.copy()
    m = similarity(rng.uniform(60, 140), rng.uniform(-20, 20), rng.uniform(150, 330), rng.uniform(100, 200))
    al = align.estimate(template_landmarks(m), 96)
    crop = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    region = blend.paste(frame, crop, al, blend.face_mask(96))
    assert region is not None
    changed = np.any(frame != before, axis=-1)
    h, w = region.alpha.shape
    inside = np.zeros_like(changed)
    inside[region.y0 : region.y0 + h, region.x0 : region.x0 + w] = region.alpha > 0
    assert changed.any()
    assert not np.any(changed & ~inside)  # nothing outside the mask changed
    # and the touched area is the lower face: below the eyes of the face we placed
    eyes_y = align.apply(m, np.array([[0.0, 0.0]]))[0, 1]
    ys = np.nonzero(changed)[0]
    assert np.median(ys) > eyes_y


def test_paste_handles_a_face_leaving_the_frame() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    al = align.estimate(template_landmarks(similarity(50, 0, 95, 60)), 96)  # half outside
    region = blend.paste(frame, np.full((96, 96, 3), 200, np.uint8), al, blend.face_mask(96))
    assert region is not None and frame.any()
    far = align.estimate(template_landmarks(similarity(50, 0, 1000, 1000)), 96)
    assert blend.paste(frame, np.zeros((96, 96, 3), np.uint8), far, blend.face_mask(96)) is None


def test_colour_match_moves_generated_mean_towards_original() -> None:
    fm = blend.face_mask(96)
    orig = np.full((96, 96, 3), 150.0, np.float32)
    gen = np.full((96, 96, 3), 100.0, np.float32)
    out = blend.match_colour(gen, orig, fm)
    band = (fm.soft > 0.02) & (fm.soft < 0.7)
    np.testing.assert_allclose(out[band].mean(0), 150.0, atol=1e-3)


def test_interior_contrast_sees_teeth_in_an_open_mouth() -> None:
    """Bright teeth over a dark cavity inside the inner lips give a high L* spread; lip colour
    stretched over the same opening gives a low one; a closed mouth has no interior (NaN)."""
    from rtdub.face.lipunits import INNER_LIP
    from rtdub.measure.metrics import interior_contrast

    n = len(INNER_LIP)
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    lm = np.zeros((468, 2))
    lm[INNER_LIP] = np.stack([100 + 40 * np.cos(ang), 100 + 15 * np.sin(ang)], 1)
    lips = np.full((200, 200, 3), (170, 80, 90), np.uint8)
    teeth = lips.copy()
    teeth[85:100, 60:140] = 235  # upper teeth
    teeth[100:116, 60:140] = 25  # cavity
    high, flat = interior_contrast(teeth, lm, INNER_LIP), interior_contrast(lips, lm, INNER_LIP)
    assert high > 150 and flat < 1, (high, flat)
    closed = lm.copy()
    closed[INNER_LIP, 1] = 100 + 0.2 * np.sin(ang)
    assert np.isnan(interior_contrast(teeth, closed, INNER_LIP))
