"""The dubbed-audio timeline of one stream: raw samples for playback, and the mel the lip
stage reads, both keyed by engine-clock time.

Audio is written in chunks at their engine time (``write(t, samples)``, 16 kHz mono float).
The raw samples go to an :class:`~rtdub.stream.rings.AudioRing` (played out by the output audio
track); a causal :class:`~rtdub.audio.LoudnessNormalizer` and a
:class:`~rtdub.audio.StreamingMel` turn the same samples into mel frames for the lip stage.
A gap before a chunk is silence; audio that never came counts as silence too, so late or
missing dubbed audio closes the lips instead of showing the speaker's own mouth.

The mel is read from a worker thread while the event loop keeps writing, so readers take a
:class:`MelSnapshot` on the loop first (a few kilobytes) and hand that to the worker.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import audio
from ..audio import HOP, MEL_FPS, N_FFT, N_MELS, SAMPLE_RATE, SILENCE_MEL
from .rings import AudioRing

logger = logging.getLogger(__name__)

SNAP_SAMPLES = 2  # a chunk starting this close to the frontier continues it


class MelSnapshot:
    """A copy of mel frames [start, stop) by absolute (engine-clock) index; silence elsewhere.

    Implements the pipeline's ``MelSource`` protocol."""

    def __init__(self, start: int, mel: np.ndarray) -> None:
        self.start = start
        self.mel = mel

    def frames(self, start: int, stop: int) -> np.ndarray:
        out = np.full((stop - start, N_MELS), SILENCE_MEL, dtype=np.float32)
        lo, hi = max(start, self.start), min(stop, self.start + len(self.mel))
        if hi > lo:
            out[lo - start : hi - start] = self.mel[lo - self.start : hi - self.start]
        return out


class DubAudioTimeline:
    """Dubbed audio on the engine clock. Single-threaded: call it from the event loop."""

    def __init__(self, max_duration: float = 10.0) -> None:
        self.ring = AudioRing(max_duration, SAMPLE_RATE)
        self._norm = audio.LoudnessNormalizer()
        # the lip stage reads a window around the newest frames only: keep a few seconds
        self._mel = audio.StreamingMel(keep_frames=int(min(max_duration, 5.0) * MEL_FPS) + 64)
        self._origin = 0  # absolute mel index of the streaming mel's frame 0
        self.restarts = 0
        self.chunks = 0

    @property
    def end_time(self) -> float | None:
        """Engine time up to which dubbed audio has been written."""
        return self.ring.end_time

    def write(self, t: float, samples: np.ndarray) -> None:
        """Add ``samples`` (16 kHz mono) that play from engine time ``t``."""
        x = np.asarray(samples, np.float32).reshape(-1)
        start = self.ring.index(t)
        if self.ring.end is not None and abs(start - self.ring.end) <= SNAP_SAMPLES:
            start = self.ring.end  # rounding of float times: keep back-to-back chunks contiguous
        first = self.ring.end is None
        gap, x = self.ring.write(start, x)
        self.chunks += 1
        if first or gap >= self.ring.capacity:
            # (re)start the mel on a hop boundary so mel index = engine time × 80 exactly
            begin = (self.ring.end or 0) - x.size
            aligned = begin - begin % HOP
            self._mel.reset()
            self._origin = aligned // HOP
            if not first:
                self.restarts += 1
            self._mel.push(np.zeros(begin - aligned, np.float32))
        elif gap > 0:
            self._mel.push(self._norm.process(np.zeros(gap, np.float32)))
        if x.size:
            self._mel.push(self._norm.process(x))

    def available_lookahead(self, t: float, limit: float) -> float:
        """How much audio after ``t`` the mel already covers, clamped to [0, limit] (s)."""
        end = self.ring.end_time
        if end is None:
            return 0.0
        return float(min(limit, max(0.0, end - N_FFT / 2 / SAMPLE_RATE - t)))

    def snapshot(self, t: float, lookahead: float, window: int) -> MelSnapshot:
        """The mel frames the lip stage needs for the frame at ``t``: its window and the
        frames around ``t`` its silence test reads."""
        start, stop = audio.window_bounds(t, lookahead, window)
        m = int(round(t * MEL_FPS))
        start, stop = min(start, m - 2), max(stop, m + 2)
        return MelSnapshot(start, self._mel.frames(start - self._origin, stop - self._origin))

    def read(self, t: float, n: int) -> np.ndarray:
        """``n`` raw samples from engine time ``t`` (silence where nothing was written)."""
        return self.ring.read(self.ring.index(t), n)
