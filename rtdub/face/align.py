"""Similarity alignment of a face to a canonical S×S crop, and back.

The canonical frame is a mean mediapipe face-mesh shape (measured once on talking-head
footage) with the outer eye corners at (±0.5, 0). Only rigid landmarks (eyes, nose ridge,
forehead, temples) drive the fit, so the crop does not move when the mouth or jaw moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# landmark index -> canonical (x, y), inter-ocular distance = 1, y grows downwards
RIGID_TEMPLATE: dict[int, tuple[float, float]] = {
    33: (-0.5, 0.0), 133: (-0.1913, 0.0148), 362: (0.1932, 0.0157), 263: (0.5, 0.0),
    168: (0.0018, -0.051), 6: (0.0025, 0.0396), 197: (0.0033, 0.1205), 195: (0.004, 0.1948),
    5: (0.0048, 0.2747), 4: (0.0058, 0.3723), 1: (0.0064, 0.4474), 127: (-0.7616, 0.0591),
    356: (0.7628, 0.0566), 234: (-0.751, 0.2173), 454: (0.7524, 0.2149), 10: (-0.0001, -0.5808),
    151: (0.0004, -0.409), 9: (0.001, -0.2337), 8: (0.0012, -0.1372),
}  # fmt: skip
RIGID_IDX = np.array(list(RIGID_TEMPLATE), dtype=np.int64)
RIGID_PTS = np.array(list(RIGID_TEMPLATE.values()), dtype=np.float64)

# canonical region the crop covers: centre and side, in inter-ocular units
CROP_CENTER = (0.0, 0.50)
CROP_SIDE = 2.2


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst; 2×3."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    var = (a**2).sum()
    scale = (sig * np.diag(d)).sum() / var if var > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def canonical_to_crop(size: int) -> np.ndarray:
    """2×3 affine from canonical units to crop pixels."""
    k = size / CROP_SIDE
    cx, cy = CROP_CENTER
    return np.array([[k, 0.0, size / 2 - k * cx], [0.0, k, size / 2 - k * cy]])


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Affine ``a`` after ``b`` (both 2×3)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


@dataclass(frozen=True)
class Alignment:
    """Where a face sits: the affine from frame pixels to crop pixels, and the crop size."""

    matrix: np.ndarray  # 2×3, frame -> crop
    size: int

    @property
    def inverse(self) -> np.ndarray:
        return invert(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def estimate(landmarks: np.ndarray, size: int) -> Alignment:
    """Alignment from (468, 2) frame-pixel landmarks."""
    to_canon = umeyama(landmarks[RIGID_IDX], RIGID_PTS)
    return Alignment(compose(canonical_to_crop(size), to_canon), size)


def warp_to_crop(frame: np.ndarray, al: Alignment) -> np.ndarray:
    """Bilinear crop of the aligned face, (S, S, C), edge pixels replicated."""
    return cv2.warpAffine(frame, al.matrix, (al.size, al.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def landmarks_to_crop(landmarks: np.ndarray, al: Alignment) -> np.ndarray:
    return apply(al.matrix, landmarks)
