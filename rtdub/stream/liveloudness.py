"""The loudness the phonetic drive reads, for a stream whose dubbed audio is still arriving.

rtdub.drive.phonetic.Loudness measures a whole track: the RMS level (dB) in a 40 ms window
around a frame, under the track's loud level (the 95th percentile of those levels on a 10 ms
grid), clipped to [-60, 0]. Here the loud level is that percentile over the newest ``window_s``
of dubbed audio written (10 ms blocks, 40 ms windows), and the frame's level is measured on the
event loop before the frame is rendered (:meth:`LiveLoudness.measure`); the drive, on the
render worker, only reads the value (:meth:`LiveLoudness.at`). Bounded: ``window_s × 100``
block energies are held.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..audio import SAMPLE_RATE
from ..drive.phonetic import LOUDNESS_FLOOR_DB, LOUDNESS_WINDOW_S

BLOCK = SAMPLE_RATE // 100  # 10 ms
WINDOW_BLOCKS = int(round(LOUDNESS_WINDOW_S * 100))  # 40 ms


class LiveLoudness:
    def __init__(self, window_s: float = 10.0) -> None:
        self._energies: deque[float] = deque(maxlen=max(WINDOW_BLOCKS, int(window_s * 100)))
        self._carry = np.zeros(0, np.float32)
        self._ref: float | None = None
        self._dirty = False
        self.level = LOUDNESS_FLOOR_DB  # dB under the loud level, of the frame measured last

    def note(self, samples: np.ndarray) -> None:
        """Dubbed audio as written (16 kHz mono float)."""
        x = np.concatenate([self._carry, np.asarray(samples, np.float32).reshape(-1)])
        n = x.size - x.size % BLOCK
        if n:
            e = (x[:n].astype(np.float64) ** 2).reshape(-1, BLOCK).mean(axis=1)
            self._energies.extend(e.tolist())
            self._dirty = True
        self._carry = x[n:]

    def reference(self) -> float | None:
        """The loud level (dB), or None before 40 ms of audio."""
        if self._dirty:
            e = np.fromiter(self._energies, np.float64)
            if e.size >= WINDOW_BLOCKS:
                w = np.convolve(e, np.ones(WINDOW_BLOCKS) / WINDOW_BLOCKS, mode="valid")
                self._ref = float(np.percentile(10 * np.log10(np.maximum(w, 1e-12)), 95))
            self._dirty = False
        return self._ref

    def measure(self, around: np.ndarray) -> float:
        """Set the frame's level from the samples ``around`` it (the 40 ms window); on the loop."""
        ref = self.reference()
        x = np.asarray(around, np.float64)
        if ref is None or x.size == 0:
            self.level = LOUDNESS_FLOOR_DB
        else:
            db = 10 * np.log10(max(float(np.mean(x * x)), 1e-12))
            self.level = float(np.clip(db - ref, LOUDNESS_FLOOR_DB, 0.0))
        return self.level

    def at(self, times: np.ndarray) -> np.ndarray:
        """The measured level for each of ``times`` (the drive asks for the frame's own)."""
        return np.full(len(np.atleast_1d(times)), self.level, np.float64)


__all__ = ["LiveLoudness"]
