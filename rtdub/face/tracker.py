"""Face tracking on mediapipe face mesh (tracking mode) with One-Euro smoothing.

While a face is tracked, each frame's landmarks come from the landmark model run directly on
the crop around the previous landmarks (:mod:`rtdub.face.landmarker`: the same model and crop as
mediapipe's graph; about half the tracker's CPU). mediapipe's graph finds the face: on the
first frame, and whenever the model finds no face in its crop.

Small faces: mediapipe's short-range detector misses faces under about a quarter of the
frame height, and the mesh then finds nothing. When the full-frame mesh fails, the tracker
meshes a crop around the last known face, and when there is none it finds the face with the
full-range detector first. A jump of the face (a cut, a re-detection) resets the smoothing.

Several faces: one face is followed. Which one is chosen when a face is acquired (the first
frame, after the face was lost) by ``TrackerConfig.face``: ``"largest"`` (the default: the
biggest box), ``"center"`` (the box nearest the frame's centre) or an index from the left
(0 = leftmost; a frame with fewer faces has none to follow). The face is then followed
where it goes, not chosen again each frame. On acquiring, the faces are counted with the
full-range detector on the whole frame (besides the mesh's own short-range search), and
again every ``recount_every`` seconds while a face is followed (off by default: a count
costs a full-range detection, about 10 ms); :attr:`FaceTracker.multi_face_frames` counts the
frames whose last count found more than one face. Small faces that only the tile search
finds are not counted.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from ..quiet import native_stderr_silenced
from . import landmarker
from .smoothing import OneEuroFilter

logger = logging.getLogger(__name__)

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_LANDMARKS = 468
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263


FaceChoice = str | int  # "largest", "center", or a face's index from the left (0 = leftmost)
FACE_CHOICES = ("largest", "center")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels


def parse_face_choice(text: str) -> FaceChoice:
    """``largest``, ``center`` (or ``centre``) or a whole number >= 0; ValueError otherwise."""
    t = text.strip().lower()
    if t in FACE_CHOICES or t == "centre":
        return "center" if t == "centre" else t
    if t.isdigit():
        return int(t)
    raise ValueError(f"must be largest, center or a face's index from the left (0 = leftmost), got {text!r}")


@dataclass(frozen=True)
class TrackerConfig:
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    min_cutoff: float = 1.5  # One-Euro, Hz, in face-size units
    beta: float = 2.0
    roi_size: int = 256  # side of the crop the small-face path meshes
    search_interval: float = 0.2  # s between full-range tile searches while no face is known
    smooth: bool = True
    direct: bool = True  # track with the landmark model directly (LiteRT) when installed
    face: FaceChoice = "largest"  # the face to follow when several are found (module docstring)
    max_faces: int = 4  # the most faces mediapipe's mesh looks for in a frame
    recount_every: float = math.inf  # s between whole-frame face counts while a face is followed

    def __post_init__(self) -> None:
        if isinstance(self.face, bool) or not (
            self.face in FACE_CHOICES or (isinstance(self.face, int) and self.face >= 0)
        ):
            raise ValueError(f"face must be one of {FACE_CHOICES} or an index >= 0, got {self.face!r}")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")


def choose_face(boxes: list[Box], choice: FaceChoice, width: int, height: int) -> int | None:
    """The index in ``boxes`` of the face ``choice`` names (TrackerConfig.face), or None when
    there is no such face (no boxes, or an index past the faces found)."""
    if not boxes:
        return None
    if choice == "largest":
        return max(range(len(boxes)), key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    if choice == "center":
        return min(range(len(boxes)), key=lambda i: math.hypot(centres[i][0] - width / 2, centres[i][1] - height / 2))
    assert isinstance(choice, int)
    left_to_right = sorted(range(len(boxes)), key=lambda i: centres[i][0])
    return left_to_right[choice] if choice < len(left_to_right) else None


def _distinct(hits: list[tuple[float, Box]]) -> list[tuple[float, Box]]:
    """One hit per face: a hit whose centre lies in a better-scoring hit's box is the same face
    (overlapping search tiles find a face twice)."""
    kept: list[tuple[float, Box]] = []
    for score, b in sorted(hits, key=lambda h: -h[0]):
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if not any(k[0] <= cx <= k[2] and k[1] <= cy <= k[3] for _, k in kept):
            kept.append((score, b))
    return kept


def _landmark_box(pts: np.ndarray) -> Box:
    lo, hi = pts.min(0), pts.max(0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


@dataclass(frozen=True)
class FaceObservation:
    landmarks: np.ndarray  # (468, 2) float64 frame pixels, smoothed
    raw: np.ndarray  # (468, 2) unsmoothed
    face_size: float  # outer-eye-corner distance in pixels
    via_roi: bool  # found through the small-face path


class Tracker(Protocol):
    """What the pipeline needs of a face tracker: landmarks of consecutive frames, or None
    where there is no face. :class:`FaceTracker` tracks on the calling thread;
    :class:`~rtdub.face.trackahead.AheadTracker` adds ``submit`` (start a frame's tracking on its
    own thread before the frame is rendered)."""

    def track(self, image: np.ndarray, t: float) -> FaceObservation | None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


def _mesh_faces(result: object, w: int, h: int) -> list[np.ndarray]:
    """The landmarks of every face in a mesh result, in frame pixels."""
    faces = getattr(result, "multi_face_landmarks", None) or []
    return [np.array([(p.x * w, p.y * h) for p in f.landmark[:N_LANDMARKS]], np.float64) for f in faces]


def _mesh_points(result: object, w: int, h: int) -> np.ndarray | None:
    faces = _mesh_faces(result, w, h)
    return faces[0] if faces else None


class FaceTracker:
    """Synchronous, stateful tracker: call :meth:`track` on consecutive frames."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        with native_stderr_silenced():
            self._init(config)
        self._warm = False

    def _init(self, config: TrackerConfig | None) -> None:
        import mediapipe as mp  # heavy import, deferred

        self.config = config or TrackerConfig()
        c = self.config
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=c.max_faces,  # sees the others, so the followed one stays itself
            refine_landmarks=False,
            min_detection_confidence=c.min_detection_confidence,
            min_tracking_confidence=c.min_tracking_confidence,
        )
        self._roi_mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, min_detection_confidence=c.min_detection_confidence
        )
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=c.min_detection_confidence
        )
        self._filter = OneEuroFilter(c.min_cutoff, c.beta)
        self._last: np.ndarray | None = None
        self._searched_at = -np.inf
        self._model: landmarker.LandmarkModel | None = None
        if c.direct:
            if landmarker.available():
                self._model = landmarker.LandmarkModel()
            else:
                logger.warning("ai-edge-litert is not installed: tracking runs through mediapipe's graph (slower)")
        self.direct_frames = 0  # frames whose landmarks came from the model run directly
        self._face_count = 0  # faces in the frame, from the last count (held between counts)
        self._counted_at = -np.inf
        self.frames = 0  # frames tracked
        self.multi_face_frames = 0  # frames whose last count found more than one face
        self.most_faces = 0  # the most faces one count found

    def reset(self) -> None:
        self._filter.reset()
        self._last = None
        self._searched_at = -np.inf
        self._face_count = 0
        self._counted_at = -np.inf

    def close(self) -> None:
        with native_stderr_silenced():  # closing a graph that never ran prints a banner
            for m in (self._mesh, self._roi_mesh, self._detector):
                m.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mesh_roi(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        """Mesh a square crop around ``box`` (x0, y0, x1, y1), scaled to roi_size."""
        h, w = image.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * 1.8
        if side < 8:
            return None
        n = self.config.roi_size
        k = n / side
        m = np.array([[k, 0, n / 2 - k * cx], [0, k, n / 2 - k * cy]], np.float64)
        crop = cv2.warpAffine(image, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        with native_stderr_silenced():  # first use prints native banners
            pts = _mesh_points(self._roi_mesh.process(crop), n, n)
        if pts is None:
            return None
        pts = (pts - m[:, 2]) / k
        if not (np.all(pts[:, 0] > -w * 0.1) and np.all(pts[:, 0] < w * 1.1)):
            return None
        return pts

    def _detect_in(self, image: np.ndarray, x0: int, y0: int) -> list[tuple[float, Box]]:
        """The full-range detector's faces in ``image`` (a tile at x0, y0): (score, box)."""
        with native_stderr_silenced():
            res = self._detector.process(np.ascontiguousarray(image))
        h, w = image.shape[:2]
        hits = []
        for d in getattr(res, "detections", None) or []:
            b = d.location_data.relative_bounding_box
            box = (x0 + b.xmin * w, y0 + b.ymin * h, x0 + (b.xmin + b.width) * w, y0 + (b.ymin + b.height) * h)
            hits.append((float(d.score[0]), box))
        return hits

    def _detect_tiles(self, image: np.ndarray) -> list[tuple[float, Box]]:
        """Full-range detection on overlapping square tiles (a small face is too small for the
        detector once the whole frame is scaled to its input)."""
        h, w = image.shape[:2]
        side = min(h, w)
        hits = []
        for y0 in range(0, max(1, h - side + 1), max(1, side // 2)):
            xs = list(range(0, max(1, w - side + 1), max(1, side // 2)))
            if xs[-1] != w - side:
                xs.append(max(0, w - side))
            for x0 in xs:
                hits += self._detect_in(image[y0 : y0 + side, x0 : x0 + side], x0, y0)
        return _distinct(hits)

    def _count(self, image: np.ndarray, t: float, at_least: int = 0) -> list[Box]:
        """Count the faces in the whole frame (full-range detector); their boxes."""
        boxes = [b for _, b in _distinct(self._detect_in(image, 0, 0))]
        self._face_count = max(len(boxes), at_least)
        self._counted_at = t
        self.most_faces = max(self.most_faces, self._face_count)
        return boxes

    def _acquire(self, image: np.ndarray, t: float) -> tuple[np.ndarray | None, bool]:
        """Find the face ``config.face`` names in a frame where none is followed: (landmarks,
        found through the small-face path)."""
        h, w = image.shape[:2]
        choice = self.config.face
        faces = _mesh_faces(self._mesh.process(image), w, h)
        if not faces:  # the full-range searches, at most every search_interval
            if t - self._searched_at < self.config.search_interval:
                return None, False
            self._searched_at = t
        boxes = self._count(image, t, len(faces))
        if len(faces) >= max(2, len(boxes)):  # the mesh found them all
            k = choose_face([_landmark_box(f) for f in faces], choice, w, h)
            return (faces[k] if k is not None else None), False
        if len(boxes) >= 2 or (boxes and not faces):
            k = choose_face(boxes, choice, w, h)
            return (self._mesh_roi(image, boxes[k]) if k is not None else None), True
        if faces:  # one face
            return (faces[0] if choose_face([_landmark_box(faces[0])], choice, w, h) is not None else None), False
        hits = [b for _, b in self._detect_tiles(image)]
        k = choose_face(hits, choice, w, h)
        if k is None:
            return None, False
        self._face_count = len(hits)
        self.most_faces = max(self.most_faces, self._face_count)
        return self._mesh_roi(image, hits[k]), True

    def _track_direct(self, image: np.ndarray) -> np.ndarray | None:
        """The landmarks in the crop around the previous frame's, or None (no previous face,
        no direct model, or the model finds no face there)."""
        if self._model is None or self._last is None:
            return None
        roi = landmarker.roi_from_landmarks(self._last)
        if roi.side < 8:
            return None
        pts, score = self._model(image, roi)
        if score < self.config.min_tracking_confidence:
            return None
        self.direct_frames += 1
        return pts

    def track(self, image: np.ndarray, t: float) -> FaceObservation | None:
        """Landmarks of the face in ``image`` (RGB uint8) at time ``t`` seconds, or None."""
        if not self._warm:  # the first calls print native banners; keep them off the terminal
            self._warm = True
            with native_stderr_silenced():
                return self.track(image, t)
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image)
        self.frames += 1
        via_roi = False
        pts = self._track_direct(image)
        if pts is None and self._last is not None:  # followed until now: look near it
            faces = _mesh_faces(self._mesh.process(image), w, h)
            if faces:
                near = self._last.mean(0)
                pts = min(faces, key=lambda f: float(np.linalg.norm(f.mean(0) - near)))
            else:
                lo, hi = self._last.min(0), self._last.max(0)
                pts = self._mesh_roi(image, (lo[0], lo[1], hi[0], hi[1]))
                via_roi = pts is not None
        elif pts is None:
            pts, via_roi = self._acquire(image, t)
        elif t - self._counted_at >= self.config.recount_every:
            self._count(image, t, 1)
        if pts is None:
            if self._last is not None:
                logger.debug("face lost at %.3f s", t)
            self._filter.reset()
            self._last = None
            self._face_count = 0
            return None
        if self._face_count > 1:
            self.multi_face_frames += 1
        size = float(np.linalg.norm(pts[RIGHT_EYE_OUTER] - pts[LEFT_EYE_OUTER])) or 1.0
        if self._last is not None:
            jump = np.linalg.norm(pts.mean(0) - self._last.mean(0)) / size
            if jump > 0.5:
                self._filter.reset()
        smoothed = self._filter(pts, t, size) if self.config.smooth else pts
        self._last = pts
        return FaceObservation(smoothed, pts, size, via_roi)
