"""Quality metrics (docs/design.md §5) that need no learned expert.

- PSNR and SSIM on the lower-face region of aligned crops.
- LMD: mean distance between lip landmarks, in percent of the inter-ocular distance (each
  frame's landmarks are first mapped to the canonical face frame, so pose and scale drop out).
- MOC: mouth-opening correlation, the Pearson correlation of the inner-lip gap over frames.
- Mouth sharpness: Laplacian variance of the mouth box, output over input.
- Mouth-interior contrast (a teeth proxy): the spread of lightness (L*, 90th minus 10th
  percentile) inside the inner lips. In an open mouth the teeth are its brightest part and the
  cavity its darkest; lips stretched over the gap, with no teeth, make it flat.
- AUC of a score between two sets (e.g. inner gap on open vowels vs on /p b m/).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    d = float(np.sqrt((a**2).sum() * (b**2).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def lmd(lips_a: np.ndarray, lips_b: np.ndarray) -> float:
    """Mean Euclidean distance of (..., 40, 2) canonical lip points, in % of inter-ocular distance."""
    return float(np.linalg.norm(np.asarray(lips_a) - np.asarray(lips_b), axis=-1).mean() * 100)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        d = d[mask]
    mse = float(d.mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window σ=1.5, K1=0.01, K2=0.03) over the mask,
    on the luma of uint8 RGB images."""

    def luma(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x @ np.array([0.299, 0.587, 0.114]) if x.ndim == 3 else x

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(m[mask].mean() if mask is not None else m.mean())


def laplacian_var(img: np.ndarray) -> float:
    g = cv2.cvtColor(np.asarray(img, np.uint8), cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(g.astype(np.float64), cv2.CV_64F).var())


def mouth_box(landmarks: np.ndarray, lip_idx: np.ndarray, margin: float = 0.25) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the lips in frame pixels, grown by ``margin`` of their size."""
    pts = landmarks[lip_idx]
    lo, hi = pts.min(0), pts.max(0)
    pad = (hi - lo) * margin
    lo, hi = np.floor(lo - pad).astype(int), np.ceil(hi + pad).astype(int)
    return int(max(lo[0], 0)), int(max(lo[1], 0)), int(hi[0]), int(hi[1])


def sharpness_ratio(out: np.ndarray, ref: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    a = laplacian_var(out[y0:y1, x0:x1])
    b = laplacian_var(ref[y0:y1, x0:x1])
    return a / b if b > 0 else float("nan")


def interior_contrast(
    img: np.ndarray, landmarks: np.ndarray, inner_idx: Sequence[int] | np.ndarray, min_open: float = 0.04
) -> float:
    """L* p90 − p10 (0..255 scale) of the RGB ``img`` pixels inside the inner-lip polygon
    (``landmarks[inner_idx]``, frame pixels, in contour order). NaN when the polygon's area is
    below ``min_open`` times its width squared (or 20 px): a closed mouth has no interior."""
    poly = np.round(np.asarray(landmarks, np.float64)[inner_idx]).astype(np.int32)
    h, w = img.shape[:2]
    x0, y0 = np.clip(poly.min(0) - 1, 0, None)
    x1, y1 = np.minimum(poly.max(0) + 2, (w, h))
    if x1 <= x0 or y1 <= y0:
        return float("nan")
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [poly - (x0, y0)], 1)
    width = float(np.ptp(poly[:, 0]))
    if int(mask.sum()) < max(20.0, min_open * width * width):
        return float("nan")
    lightness = cv2.cvtColor(np.ascontiguousarray(img[y0:y1, x0:x1], np.uint8), cv2.COLOR_RGB2LAB)[..., 0]
    lo, hi = np.percentile(lightness[mask > 0], [10, 90])
    return float(hi - lo)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    p = np.asarray(positive, np.float64)
    n = np.asarray(negative, np.float64)
    if p.size == 0 or n.size == 0:
        return float("nan")
    greater = (p[:, None] > n[None, :]).sum()
    ties = (p[:, None] == n[None, :]).sum()
    return float((greater + 0.5 * ties) / (p.size * n.size))
