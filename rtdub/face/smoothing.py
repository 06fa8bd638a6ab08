"""One-Euro filter (Casiez et al., CHI 2012) over arrays: low jitter at rest, low lag in motion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


@dataclass
class OneEuroFilter:
    """Element-wise One-Euro filter; time-stamped, so a variable frame rate is handled."""

    min_cutoff: float = 1.0  # Hz, cutoff at rest
    beta: float = 0.5  # cutoff growth per unit of speed
    d_cutoff: float = 1.0  # Hz, cutoff of the speed estimate

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """Filter ``x`` observed at time ``t``. Speeds are divided by ``scale`` before they
        raise the cutoff (e.g. the face size, so ``beta`` does not depend on resolution)."""
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        assert self._dx is not None
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx) / scale
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.copy()
