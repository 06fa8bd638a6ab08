"""The audio drive: lip-motion units per video frame from the dubbed audio's log-mel, through
the bundle's audio-to-lip model, causal up to the lookahead.

    mel window [t - W/80 + lookahead, t + lookahead] ─► a2l ─► raw units ─► causal smoothing ─► units(t)
    silent frames (mean log-mel of the 50 ms around t below silence_level) ─► the closed-mouth units
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .. import audio
from ..backends.base import Backend
from ..defaults import DEFAULT_LOOKAHEAD_MS
from ..model import ModelBundle

logger = logging.getLogger(__name__)


class MelSource(Protocol):
    def frames(self, start: int, stop: int) -> np.ndarray: ...


@dataclass(frozen=True)
class AudioDriveConfig:
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS  # most future audio the lips may use
    # a frame is silent when the mean log-mel (scale [-4, 4]) of the 50 ms around it stays
    # below this; silent frames get the closed-mouth units
    silence_level: float = -3.0


class AudioStage:
    """Lip-motion units per video frame from a mel source, causal up to the lookahead."""

    def __init__(self, bundle: ModelBundle, backend: Backend, config: AudioDriveConfig) -> None:
        self.bundle = bundle
        self.backend = backend
        self.config = config
        la = config.lookahead_ms / 1000
        if la < 0:
            raise ValueError("lookahead must be >= 0 ms")
        if la > bundle.max_lookahead + 1e-6:
            logger.warning(
                "lookahead beyond the trained range; clamped",
                extra={"requested_ms": config.lookahead_ms, "max_ms": bundle.max_lookahead * 1000},
            )
            la = bundle.max_lookahead
        self.lookahead = la
        self._la = np.full((1, 1), la, np.float32)
        self._raw: deque[np.ndarray] = deque(maxlen=len(bundle.smoothing))
        self._w = np.asarray(bundle.smoothing, np.float32) / float(np.sum(bundle.smoothing))

    def reset(self) -> None:
        self._raw.clear()

    def needed_until(self, t: float) -> float:
        """Audio time (s) up to which the mel must be known to compute frame ``t``."""
        return t + self.lookahead + audio.N_FFT / 2 / audio.SAMPLE_RATE

    def is_silent(self, mel: MelSource, t: float) -> bool:
        m = int(round(t * audio.MEL_FPS))
        near = mel.frames(m - 2, m + 2)
        return float(near.mean()) < self.config.silence_level

    def units_at(
        self,
        mel: MelSource,
        t: float,
        times: dict[str, float] | None = None,
        lookahead: float | None = None,
    ) -> tuple[np.ndarray, bool]:
        """Smoothed z-units for the frame at ``t`` and whether the audio is silent there.

        ``lookahead`` (s) overrides the configured lookahead for this frame, clamped to it: a
        streaming caller passes the future audio actually buffered (docs/design.md §3)."""
        t0 = time.perf_counter()
        la, la_in = self.lookahead, self._la
        if lookahead is not None and lookahead < la:
            la = max(0.0, lookahead)
            la_in = np.full((1, 1), la, np.float32)
        start, stop = audio.window_bounds(t, la, self.bundle.mel_window)
        win = mel.frames(start, stop)[None]
        silent = self.is_silent(mel, t)
        t1 = time.perf_counter()
        raw = self.bundle.closed_units if silent else self.backend.audio_to_lip(win, la_in)[0]
        t2 = time.perf_counter()
        self._raw.append(np.asarray(raw, np.float32))
        hist = list(self._raw)
        while len(hist) < len(self._w):
            hist.insert(0, hist[0])
        units = np.tensordot(self._w, np.stack(hist), axes=1).astype(np.float32)
        if times is not None:
            times["mel"] = (t1 - t0) * 1000
            times["a2l"] = (t2 - t1) * 1000
        return units, silent
