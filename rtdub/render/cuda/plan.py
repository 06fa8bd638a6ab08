"""Host-side planning of a paste-back for the CUDA kernel and its CPU harness (numpy only).

:func:`plan_paste` picks the same bounding box as :func:`rtdub.render.blend.paste` and turns the
alignment into the matrices the kernels use: box pixel -> crop pixel, inverted exactly as
cv2.warpAffine inverts the matrix it is given, so that the kernel samples the crop at the very
positions OpenCV does. For 4:2:0 frames it adds the chroma box and its matrix: chroma sample
(i, j) sits at the centre of its 2×2 luma block, frame position (2j + 0.5, 2i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...face.align import Alignment
from ..blend import FaceMask, paste_box

# crop layouts understood by the kernels (blend_math.h)
LAYOUT_HWC_F32 = 0  # (S, S, 3) float32 in 0..255, what blend.paste gets
LAYOUT_CHW_UNIT = 1  # (3, S, S) float32 in [0, 1]: the generator's output, clipped and scaled by 255
LAYOUT_HWC_U8 = 2  # (S, S, 3) uint8


@dataclass(frozen=True)
class Box:
    """A rectangle of one plane's pixel grid and the affine from its pixels to crop pixels."""

    x0: int
    y0: int
    width: int
    height: int
    matrix: tuple[float, float, float, float, float, float]  # row-major 2×3, box pixel -> crop

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)

    def matrix_array(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float64).reshape(2, 3)


@dataclass(frozen=True)
class BlendPlan:
    """Where one paste lands: the RGB / luma box and, for 4:2:0 frames, the chroma box."""

    luma: Box
    chroma: Box | None = None


def _as_tuple(m: np.ndarray) -> tuple[float, float, float, float, float, float]:
    a = [float(v) for v in np.asarray(m, np.float64).reshape(6)]
    return (a[0], a[1], a[2], a[3], a[4], a[5])


def plan_paste(width: int, height: int, al: Alignment, mask: FaceMask, chroma: bool = False) -> BlendPlan | None:
    """Plan a paste into a ``width``×``height`` frame; ``chroma`` adds the 4:2:0 chroma box."""
    box = paste_box(width, height, al, mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    crop_to_box = al.inverse.copy()  # what blend.paste hands to cv2.warpAffine
    crop_to_box[:, 2] -= (x0, y0)
    m = cv2.invertAffineTransform(crop_to_box)  # the inversion cv2.warpAffine does internally
    luma = Box(x0, y0, x1 - x0, y1 - y0, _as_tuple(m))
    if not chroma:
        return BlendPlan(luma)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    cx0, cy0 = x0 // 2, y0 // 2
    cx1, cy1 = min(cw, (x1 + 1) // 2), min(ch, (y1 + 1) // 2)
    # chroma box pixel (j, i) -> luma box position (2(cx0 + j) + 0.5 - x0, 2(cy0 + i) + 0.5 - y0)
    tx, ty = 2 * cx0 + 0.5 - x0, 2 * cy0 + 0.5 - y0
    mc = np.empty((2, 3), np.float64)
    mc[:, 0] = 2 * m[:, 0]
    mc[:, 1] = 2 * m[:, 1]
    mc[:, 2] = m[:, 0] * tx + m[:, 1] * ty + m[:, 2]
    return BlendPlan(luma, Box(cx0, cy0, cx1 - cx0, cy1 - cy0, _as_tuple(mc)))


def crop_layout(crop: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The crop as a C-contiguous array the kernels can read, and its layout code."""
    a = np.asarray(crop)
    if a.shape == (size, size, 3):
        if a.dtype == np.uint8:
            return np.ascontiguousarray(a), LAYOUT_HWC_U8
        return np.ascontiguousarray(a, np.float32), LAYOUT_HWC_F32
    if a.shape == (3, size, size):
        return np.ascontiguousarray(a, np.float32), LAYOUT_CHW_UNIT
    raise ValueError(
        f"crop of shape {a.shape}: expected ({size}, {size}, 3) in 0..255 or (3, {size}, {size}) in [0, 1]"
    )


def offset_array(offset: np.ndarray | None) -> np.ndarray:
    if offset is None:
        return np.zeros(3, np.float32)
    out = np.ascontiguousarray(offset, np.float32).reshape(-1)
    if out.shape != (3,):
        raise ValueError(f"colour offset of shape {np.shape(offset)}: expected (3,)")
    return out
