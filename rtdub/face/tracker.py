"""Face tracking on mediapipe face mesh (tracking mode) with One-Euro smoothing.

While a face is tracked, each frame's landmarks come from the landmark model run directly on
the crop around the previous landmarks (:mod:`rtdub.face.landmarker`: the same model and crop as
mediapipe's graph; about half the tracker's CPU). mediapipe's graph finds the face: on the
first frame, and whenever the model finds no face in its crop.

Small faces: mediapipe's short-range detector misses faces under about a quarter of the
frame height, and the mesh then finds nothing. When the full-frame mesh fails, the tracker
meshes a crop around the last known face, and when there is none it finds the face with the
full-range detector first. A jump of the face (a cut, a re-detection) resets the smoothing.
"""

from __future__ import annotations

import logging
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


def _mesh_points(result: object, w: int, h: int) -> np.ndarray | None:
    faces = getattr(result, "multi_face_landmarks", None)
    if not faces:
        return None
    lm = faces[0].landmark
    return np.array([(p.x * w, p.y * h) for p in lm[:N_LANDMARKS]], np.float64)


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
            max_num_faces=1,
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

    def reset(self) -> None:
        self._filter.reset()
        self._last = None
        self._searched_at = -np.inf

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

    def _detect_in(self, image: np.ndarray, x0: int, y0: int) -> tuple[float, tuple[float, ...]] | None:
        with native_stderr_silenced():
            res = self._detector.process(np.ascontiguousarray(image))
        dets = getattr(res, "detections", None)
        if not dets:
            return None
        h, w = image.shape[:2]
        best = max(dets, key=lambda d: d.score[0])
        b = best.location_data.relative_bounding_box
        box = (x0 + b.xmin * w, y0 + b.ymin * h, x0 + (b.xmin + b.width) * w, y0 + (b.ymin + b.height) * h)
        return float(best.score[0]), box

    def _detect_box(self, image: np.ndarray) -> tuple[float, float, float, float] | None:
        """Full-range detection on the whole frame, then on overlapping square tiles (a small
        face is too small for the detector once the whole frame is scaled to its input)."""
        found = self._detect_in(image, 0, 0)
        if found is None:
            h, w = image.shape[:2]
            side = min(h, w)
            hits = []
            for y0 in range(0, max(1, h - side + 1), max(1, side // 2)):
                xs = list(range(0, max(1, w - side + 1), max(1, side // 2)))
                if xs[-1] != w - side:
                    xs.append(max(0, w - side))
                for x0 in xs:
                    hit = self._detect_in(image[y0 : y0 + side, x0 : x0 + side], x0, y0)
                    if hit is not None:
                        hits.append(hit)
            found = max(hits, key=lambda x: x[0]) if hits else None
        if found is None:
            return None
        x0f, y0f, x1f, y1f = found[1]
        return (x0f, y0f, x1f, y1f)

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
        pts = self._track_direct(image)
        if pts is None:
            pts = _mesh_points(self._mesh.process(image), w, h)
        via_roi = False
        if pts is None:
            box = None
            if self._last is not None:
                lo, hi = self._last.min(0), self._last.max(0)
                box = (lo[0], lo[1], hi[0], hi[1])
                pts = self._mesh_roi(image, box)
            if pts is None and t - self._searched_at >= self.config.search_interval:
                self._searched_at = t
                box = self._detect_box(image)
                pts = self._mesh_roi(image, box) if box is not None else None
            via_roi = pts is not None
        if pts is None:
            if self._last is not None:
                logger.debug("face lost", extra={"t": t})
            self._filter.reset()
            self._last = None
            return None
        size = float(np.linalg.norm(pts[RIGHT_EYE_OUTER] - pts[LEFT_EYE_OUTER])) or 1.0
        if self._last is not None:
            jump = np.linalg.norm(pts.mean(0) - self._last.mean(0)) / size
            if jump > 0.5:
                self._filter.reset()
        smoothed = self._filter(pts, t, size) if self.config.smooth else pts
        self._last = pts
        return FaceObservation(smoothed, pts, size, via_roi)
