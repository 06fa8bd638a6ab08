"""Fakes that implement the real base classes (no mocks)."""

from __future__ import annotations

import time

import numpy as np

from rtdub.backends.base import Backend


class SlowBackend(Backend):
    """A real backend that sleeps before each call: an artificially slow machine."""

    name = "slow"

    def __init__(self, inner: Backend, generate_s: float = 0.0, a2l_s: float = 0.0) -> None:
        self.inner = inner
        self.generate_s = generate_s
        self.a2l_s = a2l_s
        self.generate_calls = 0

    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        if self.a2l_s:
            time.sleep(self.a2l_s)
        return self.inner.audio_to_lip(mel, lookahead)

    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        self.generate_calls += 1
        if self.generate_s:
            time.sleep(self.generate_s)
        return self.inner.generate(pose, reference, units)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()
