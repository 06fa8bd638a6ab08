"""Region-only paste-back: feathered lower-face mask, colour matching, inverse warp.

Only the bounding box of the mask's footprint in the frame is touched, and inside it only
pixels whose warped mask weight is above zero change: every other pixel keeps its exact
input value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..face.align import Alignment, apply, canonical_to_crop

# lower-face polygon in canonical units (see align.py): a line under the nose, then the
# jaw line pushed down so an opened mouth still fits
_TOP_Y = 0.50
_JAW = np.array([
    (-0.714, 0.552), (-0.661, 0.735), (-0.589, 0.884), (-0.511, 0.993), (-0.413, 1.09),
    (-0.329, 1.159), (-0.238, 1.221), (-0.13, 1.266), (0.011, 1.283), (0.15, 1.266),
    (0.257, 1.22), (0.345, 1.158), (0.426, 1.089), (0.52, 0.991), (0.596, 0.882),
    (0.665, 0.733), (0.717, 0.549),
])  # fmt: skip


def _polygon() -> np.ndarray:
    jaw = _JAW.copy()
    jaw[:, 0] *= 1.03
    # an opened jaw drops the chin by up to a quarter of the nose-to-chin height: the mask must
    # cover it, or the original jaw keeps moving under a re-rendered mouth
    jaw[:, 1] = _TOP_Y + (jaw[:, 1] - _TOP_Y) * 1.28
    top = np.array([[jaw[-1, 0], _TOP_Y], [jaw[0, 0], _TOP_Y]])
    return np.vstack([jaw, top])


@dataclass(frozen=True)
class FaceMask:
    """Masks in crop space for one crop size."""

    soft: np.ndarray  # (S, S) float32 in [0, 1]: blend weight, feathered, zero at its border
    hidden: np.ndarray  # (S, S) bool: what the generator's pose input must not see
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of soft > 0


@lru_cache(maxsize=8)
def face_mask(size: int, feather: float = 0.03) -> FaceMask:
    """The lower-face mask for crop size ``size``; ``feather`` is the blur sigma / size."""
    ss = 4  # supersample the polygon for smooth edges
    poly = apply(canonical_to_crop(size * ss), _polygon())
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    cv2.fillPoly(canvas, [np.round(poly).astype(np.int32)], 255)
    hard = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    sigma = max(0.5, feather * size)
    r = int(np.ceil(2 * sigma))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    # the crop border counts as outside: the weight must reach zero before the crop ends
    eroded = cv2.erode(hard, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    soft = cv2.GaussianBlur(eroded, (0, 0), sigma)
    soft = np.clip((soft / soft.max() - 0.02) / 0.96, 0, 1).astype(np.float32)  # core weight 1
    soft[hard == 0] = 0.0
    soft[[0, -1], :] = 0.0  # blur tails (< 1 %) that reach the crop border
    soft[:, [0, -1]] = 0.0
    ys, xs = np.nonzero(soft > 0)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    top = int(np.floor(apply(canonical_to_crop(size), np.array([[0.0, _TOP_Y - 0.04]]))[0, 1]))
    hidden = np.zeros((size, size), bool)
    hidden[max(0, top) :, :] = True
    for a in (soft, hidden):
        a.setflags(write=False)
    return FaceMask(soft, hidden, bbox)


def mask_pose(crop: np.ndarray, mask: FaceMask, fill: float | int = 0) -> np.ndarray:
    """Hide the lower face of a crop (H, W, C) for the generator's pose input."""
    out = crop.copy()
    out[mask.hidden] = fill
    return out


def colour_offset(generated: np.ndarray, original: np.ndarray, mask: FaceMask) -> np.ndarray:
    """Per-channel offset, float32 (3,), that moves the generated crop's mean to the
    original's over the feather band, where both show skin. Crops are (S, S, 3) in 0..255."""
    band = (mask.soft > 0.02) & (mask.soft < 0.7)
    if not band.any():
        return np.zeros(3, np.float32)
    g = np.asarray(generated, np.float32)
    o = np.asarray(original, np.float32)
    return np.asarray(o[band].mean(0) - g[band].mean(0)).astype(np.float32)


def match_colour(generated: np.ndarray, original: np.ndarray, mask: FaceMask) -> np.ndarray:
    """The generated crop shifted by :func:`colour_offset`; float32 in, float32 out."""
    return np.asarray(generated, np.float32) + colour_offset(generated, original, mask)


@dataclass(frozen=True)
class PasteRegion:
    """Where a paste touched the frame: the box and its blend weights (for tests and stats)."""

    x0: int
    y0: int
    alpha: np.ndarray  # (h, w) float32, 0 where the frame was left untouched


def paste_box(width: int, height: int, al: Alignment, mask: FaceMask) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 (exclusive) of the frame region a paste may touch, or None."""
    x0m, y0m, x1m, y1m = mask.bbox
    corners = apply(al.inverse, np.array([[x0m, y0m], [x1m, y0m], [x0m, y1m], [x1m, y1m]], np.float64))
    x0 = max(0, int(np.floor(corners[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - 1)
    x1 = min(width, int(np.ceil(corners[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(corners[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste(
    frame: np.ndarray, crop: np.ndarray, al: Alignment, mask: FaceMask, interpolation: int = cv2.INTER_LINEAR
) -> PasteRegion | None:
    """Blend ``crop`` (S, S, 3, uint8 or float in 0..255) into ``frame`` in place.

    ``interpolation`` resamples the crop (the mask is always bilinear); the CUDA kernel
    matches the bilinear default. Returns the touched region, or None when the mask falls
    outside the frame."""
    h, w = frame.shape[:2]
    box = paste_box(w, h, al, mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    m = al.inverse.copy()
    m[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    alpha = cv2.warpAffine(mask.soft, m, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
    gen = cv2.warpAffine(np.asarray(crop, np.float32), m, size, flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    mix_into(frame[y0:y1, x0:x1], gen, alpha)
    return PasteRegion(x0, y0, alpha)


def mix_into(roi: np.ndarray, face: np.ndarray, weight: np.ndarray) -> None:
    """``roi`` (h, w, 3) uint8 becomes ``weight * face + (1 - weight) * roi`` in place, rounded;
    only pixels with a weight above zero are read or written."""
    touched = weight > 0
    a = weight[touched][:, None]
    mixed = roi[touched].astype(np.float32) * (1 - a) + face[touched] * a
    roi[touched] = np.clip(np.rint(mixed), 0, 255).astype(roi.dtype)
