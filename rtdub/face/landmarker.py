"""Face-mesh landmarks from mediapipe's landmark model, run directly while a face is tracked.

mediapipe's face-mesh graph, in video mode, crops each frame around the face found in the
frame before and runs its landmark model (``face_landmark.tflite``, shipped in the mediapipe
wheel) on that crop. On this machine the model takes about 2.5 ms of CPU, a tracking step
through the graph (packets, calculators, protobuf results) about 8 ms. :class:`LandmarkModel`
does the tracking step itself: the same model, through LiteRT, on the same crop (3.6 ms with
the crop and the mapping back).

The crop follows mediapipe's rules for the face mesh (face_landmark_landmarks_to_roi): the
axis-aligned box of the previous landmarks, scaled 1.5×, made square on its long side,
rotated so that the outer eye corners (33 → 263) lie level; the image is resampled
bilinearly into a 192×192 crop with values in [0, 1], zero outside the frame. The model
returns 468 (x, y, z) points in crop pixels and a face-presence logit. With these rules the
landmarks match the graph's to float precision (tests/test_tracker.py).

Finding a face (no previous landmarks, or the model says the crop holds none) stays with
mediapipe's graph (detector, then landmarks): see :mod:`rtdub.face.tracker`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

INPUT_SIZE = 192
N_LANDMARKS = 468
ROI_SCALE = 1.5
EYE_START, EYE_END = 33, 263  # outer eye corners: the crop's rotation


@dataclass(frozen=True)
class Roi:
    """A square crop of the frame: centre and side in pixels, rotation in radians."""

    cx: float
    cy: float
    side: float
    angle: float


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """The crop mediapipe's graph would take for the next frame, from (468, 2) pixel points."""
    lo, hi = points.min(0), points.max(0)
    d = points[EYE_END] - points[EYE_START]
    return Roi(
        float(lo[0] + hi[0]) / 2,
        float(lo[1] + hi[1]) / 2,
        float(max(hi[0] - lo[0], hi[1] - lo[1])) * ROI_SCALE,
        math.atan2(float(d[1]), float(d[0])),
    )


def crop_matrix(roi: Roi, size: int = INPUT_SIZE) -> np.ndarray:
    """The 2×3 affine map from frame pixels to crop pixels (scale, then rotate by −angle)."""
    k = size / roi.side
    c, s = k * math.cos(roi.angle), k * math.sin(roi.angle)
    h = size / 2
    return np.array([[c, s, h - c * roi.cx - s * roi.cy], [-s, c, h + s * roi.cx - c * roi.cy]])


def to_frame(points: np.ndarray, roi: Roi, size: int = INPUT_SIZE) -> np.ndarray:
    """Crop pixels back to frame pixels: the inverse of :func:`crop_matrix`, in closed form."""
    k = roi.side / size
    c, s = k * math.cos(roi.angle), k * math.sin(roi.angle)
    q = points - size / 2
    return np.stack([roi.cx + c * q[:, 0] - s * q[:, 1], roi.cy + s * q[:, 0] + c * q[:, 1]], axis=1)


def model_path() -> Path:
    """``face_landmark.tflite`` from the installed mediapipe wheel."""
    import mediapipe  # the model ships inside the wheel

    return Path(os.path.dirname(mediapipe.__file__)) / "modules" / "face_landmark" / "face_landmark.tflite"


class LandmarkModel:
    """The face-mesh landmark model on a crop of the frame. Not thread-safe: one per tracker."""

    def __init__(self, threads: int = 1, path: Path | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter  # optional import, deferred

        self.path = path or model_path()
        self._interp = Interpreter(model_path=str(self.path), num_threads=threads)
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()[0]
        if list(inp["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 3]:
            raise ValueError(f"{self.path}: unexpected input shape {list(inp['shape'])}")
        self._input = inp["index"]
        outs = {int(np.prod(d["shape"])): d["index"] for d in self._interp.get_output_details()}
        if N_LANDMARKS * 3 not in outs or 1 not in outs:
            raise ValueError(f"{self.path}: expected outputs of {N_LANDMARKS * 3} landmarks and 1 face score")
        self._points, self._score = outs[N_LANDMARKS * 3], outs[1]
        self._buf = np.empty((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)

    def __call__(self, image: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """(468, 2) landmarks in frame pixels and the face-presence probability of the crop
        ``roi`` of ``image`` (RGB uint8)."""
        m = crop_matrix(roi)
        crop = cv2.warpAffine(
            image, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        np.multiply(crop, np.float32(1 / 255), out=self._buf[0], casting="unsafe")
        self._interp.set_tensor(self._input, self._buf)
        self._interp.invoke()
        pts = self._interp.get_tensor(self._points).reshape(N_LANDMARKS, 3)[:, :2].astype(np.float64)
        logit = float(self._interp.get_tensor(self._score).ravel()[0])
        return to_frame(pts, roi), 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))


def available() -> bool:
    """Whether LiteRT is installed (``pip install ai-edge-litert``)."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = [
    "INPUT_SIZE",
    "LandmarkModel",
    "Roi",
    "available",
    "crop_matrix",
    "model_path",
    "roi_from_landmarks",
    "to_frame",
]
