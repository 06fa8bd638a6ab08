"""Lip-motion units: a compact, speaker-normalised description of the mouth per frame.

Lip landmarks (mediapipe face mesh, 20 outer + 20 inner) are expressed in the canonical face
frame (inter-ocular distance = 1, see align.py), so head pose and face size drop out. A PCA
basis fitted on training footage turns them into a few coefficients; the inner-lip gap is
appended as its own unit because it is what opens and closes the mouth. Both stages of the
model speak these units z-scored per speaker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import align

OUTER_LIP = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
INNER_LIP = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
LIP_IDX = np.array(OUTER_LIP + INNER_LIP, dtype=np.int64)
# upper/lower inner-lip pairs whose distances make the gap
GAP_PAIRS = np.array([(13, 14), (82, 87), (312, 317), (81, 178), (311, 402)], dtype=np.int64)


def to_canonical(landmarks: np.ndarray) -> np.ndarray:
    """(468, 2) frame pixels -> canonical units through the rigid-landmark similarity."""
    m = align.umeyama(landmarks[align.RIGID_IDX], align.RIGID_PTS)
    return align.apply(m, landmarks)


def lip_points(canonical: np.ndarray) -> np.ndarray:
    """(40, 2) canonical lip landmarks."""
    return canonical[LIP_IDX]


def inner_gap(canonical: np.ndarray) -> float:
    """Mean vertical opening of the inner lips, canonical units (≈0 when closed)."""
    a, b = canonical[GAP_PAIRS[:, 0]], canonical[GAP_PAIRS[:, 1]]
    return float(np.mean(b[:, 1] - a[:, 1]))


def inner_gap_batch(lips: np.ndarray) -> np.ndarray:
    """Inner gap from (N, 40, 2) lip points as returned by :func:`lip_points`."""
    pos = {int(k): i for i, k in enumerate(LIP_IDX)}
    up = [pos[int(a)] for a in GAP_PAIRS[:, 0]]
    lo = [pos[int(b)] for b in GAP_PAIRS[:, 1]]
    return np.mean(lips[:, lo, 1] - lips[:, up, 1], axis=1)


@dataclass(frozen=True)
class LipBasis:
    """PCA of centred lip shapes plus the inner gap: raw units = [coeffs..., gap]."""

    mean: np.ndarray  # (80,)
    components: np.ndarray  # (K, 80), orthonormal rows

    @property
    def n_units(self) -> int:
        return int(self.components.shape[0]) + 1

    @staticmethod
    def fit(lips: np.ndarray, n_components: int = 8) -> LipBasis:
        """Fit on (N, 40, 2) lip points. Each shape is first centred on its own centroid so
        that the basis describes shape, not residual alignment error."""
        x = _centre(lips).reshape(len(lips), -1)
        mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        return LipBasis(mean.astype(np.float32), vt[:n_components].astype(np.float32))

    def raw_units(self, lips: np.ndarray) -> np.ndarray:
        """(N, 40, 2) -> (N, K+1) raw (not yet z-scored) units."""
        x = _centre(lips).reshape(len(lips), -1)
        coeffs = (x - self.mean) @ self.components.T
        return np.concatenate([coeffs, inner_gap_batch(lips)[:, None]], axis=1).astype(np.float32)


def _centre(lips: np.ndarray) -> np.ndarray:
    lips = np.asarray(lips, np.float64)
    return lips - lips.mean(axis=1, keepdims=True)


@dataclass(frozen=True)
class UnitStats:
    """Per-speaker statistics used to z-score raw units."""

    mean: np.ndarray
    std: np.ndarray

    @staticmethod
    def fit(raw: np.ndarray, floor: float = 1e-4) -> UnitStats:
        return UnitStats(raw.mean(0).astype(np.float32), np.maximum(raw.std(0), floor).astype(np.float32))

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.mean) / self.std).astype(np.float32)
