"""Bounded, timestamp-keyed buffers for the streaming engine, and the pts-to-clock mapping.

Everything here lives on one *engine clock*: seconds on a monotonic clock since the session
started. Incoming media carries its own pts and time_base; :class:`PtsClock` maps them onto
the engine clock once (anchored at the first arrival, corrected slowly for clock skew), so
alignment is by timestamp and never by counting frames.

Drop policies (docs/design.md §6.4, every buffer is bounded):

- :class:`VideoRing` holds at most ``max_duration`` seconds of frames (and ``max_frames``).
  When a new frame would exceed either bound the **oldest** frame is dropped and counted in
  ``dropped_overflow``. A frame whose time is not after the newest one already held
  (duplicated or reordered pts) is refused and counted in ``dropped_out_of_order``.
- :class:`AudioRing` is an append-only timeline of 16 kHz mono samples that keeps the newest
  ``max_duration`` seconds: advancing past capacity **drops the oldest** samples (counted in
  ``dropped_overflow``). A write that starts before the frontier has its overlapping head
  dropped (``dropped_overlap``), so what was once written never changes. A gap before a
  write is filled with silence (``gap_samples``). Reads outside what is held return silence.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

T = TypeVar("T")


def pts_seconds(pts: int, time_base: Fraction | object) -> float:
    """pts × time_base in seconds (time_base may be a Fraction or PyAV's rational)."""
    num = int(getattr(time_base, "numerator", 1))
    den = int(getattr(time_base, "denominator", 1))
    return pts * num / den


@dataclass(frozen=True)
class PtsClockConfig:
    max_jump: float = 2.0  # s: a pts step larger than this (or backwards) re-anchors the stream
    skew_window: float = 5.0  # s over which the minimum transit delay is taken
    skew_tolerance: float = 0.02  # s the mapping may drift from arrival times before it is corrected


class PtsClock:
    """Map a stream's pts onto the engine clock: ``t = anchor + (pts - pts0) · time_base``.

    The anchor is the arrival time of the first packet. Jitter does not move the mapping,
    because it follows the *earliest* arrival seen over a sliding window: when the smallest
    ``arrival - mapped`` over ``skew_window`` seconds leaves ±``skew_tolerance`` (the sender's
    clock runs at another rate, or the first packet was delayed), the anchor shifts by it.
    Two streams from one sender (video and its audio) are each mapped onto the engine clock
    this way, so they stay aligned with each other and with locally generated audio over
    hours. A discontinuity (pts backwards, or a jump over ``max_jump``) re-anchors at once.
    """

    def __init__(self, config: PtsClockConfig | None = None) -> None:
        self.config = config or PtsClockConfig()
        self.reanchors = 0
        self.corrections = 0
        self._anchor: float | None = None
        self._base = 0.0  # pts seconds of the anchor
        self._last: float | None = None
        self._transit: deque[tuple[float, float]] = deque()  # (arrival, arrival - mapped)

    def reset(self) -> None:
        self._anchor = None
        self._last = None
        self._transit.clear()

    def map(self, pts_sec: float, arrival: float) -> float:
        """Engine time of a packet with ``pts_sec`` (pts × time_base) that arrived at ``arrival``."""
        c = self.config
        if self._anchor is None or self._last is None:
            self._anchor, self._base = arrival, pts_sec
        elif pts_sec < self._last - 1e-9 or pts_sec - self._last > c.max_jump:
            self.reanchors += 1
            logger.info(
                "stream timestamps jumped; re-anchored",
                extra={"from_s": self._last, "to_s": pts_sec, "arrival": arrival},
            )
            self._anchor, self._base = arrival, pts_sec
            self._transit.clear()
        self._last = pts_sec
        t = self._anchor + (pts_sec - self._base)
        # sliding minimum of the transit delay (monotone deque: O(1) amortised)
        d = arrival - t
        while self._transit and self._transit[-1][1] >= d:
            self._transit.pop()
        self._transit.append((arrival, d))
        while self._transit and arrival - self._transit[0][0] > c.skew_window:
            self._transit.popleft()
        low = self._transit[0][1]
        span = arrival - self._anchor
        if span >= c.skew_window and abs(low) > c.skew_tolerance:
            self._anchor += low
            self._transit = deque((a, x - low) for a, x in self._transit)
            self.corrections += 1
            t += low
        return t


@dataclass(frozen=True)
class Timed(Generic[T]):
    t: float  # engine-clock seconds
    item: T
    arrival: float  # engine-clock seconds when it was received


class VideoRing(Generic[T]):
    """Frames keyed by time, oldest first. See the module docstring for the drop policy."""

    def __init__(self, max_duration: float = 1.0, max_frames: int = 64) -> None:
        if max_duration <= 0 or max_frames <= 0:
            raise ValueError("a ring must hold something")
        self.max_duration = max_duration
        self.max_frames = max_frames
        self._q: deque[Timed[T]] = deque()
        self.pushed = 0
        self.dropped_overflow = 0
        self.dropped_out_of_order = 0

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self) -> Iterator[Timed[T]]:
        return iter(self._q)

    @property
    def span(self) -> float:
        return self._q[-1].t - self._q[0].t if self._q else 0.0

    def push(self, t: float, item: T, arrival: float | None = None) -> bool:
        """Add a frame; returns False when it was refused (not newer than the newest)."""
        if self._q and t <= self._q[-1].t:
            self.dropped_out_of_order += 1
            return False
        self._q.append(Timed(t, item, t if arrival is None else arrival))
        self.pushed += 1
        while len(self._q) > self.max_frames or (len(self._q) > 1 and t - self._q[0].t > self.max_duration):
            self._q.popleft()
            self.dropped_overflow += 1
        return True

    def oldest(self) -> Timed[T] | None:
        return self._q[0] if self._q else None

    def newest(self) -> Timed[T] | None:
        return self._q[-1] if self._q else None

    def pop(self) -> Timed[T]:
        """Remove and return the oldest frame (IndexError when empty)."""
        return self._q.popleft()

    def pop_through(self, t: float) -> tuple[Timed[T] | None, int]:
        """Remove every frame with time ≤ ``t``; return the newest of them and how many older
        ones were discarded with it (the caller counts those as stale)."""
        last: Timed[T] | None = None
        skipped = 0
        while self._q and self._q[0].t <= t:
            if last is not None:
                skipped += 1
            last = self._q.popleft()
        return last, skipped

    def clear(self) -> int:
        n = len(self._q)
        self._q.clear()
        return n


class AudioRing:
    """Append-only mono sample timeline keyed by absolute sample index on the engine clock.

    Sample ``i`` plays at ``i / rate`` seconds. See the module docstring for the drop policy."""

    def __init__(self, max_duration: float = 10.0, rate: int = 16000) -> None:
        self.rate = rate
        self.capacity = max(1, int(round(max_duration * rate)))
        self._buf = np.zeros(self.capacity, np.float32)
        self._end: int | None = None  # absolute index one past the newest sample (the frontier)
        self._first = 0  # absolute index where the held samples may start (after a jump)
        self.dropped_overflow = 0
        self.dropped_overlap = 0
        self.gap_samples = 0

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample still held."""
        return 0 if self._end is None else self._end - self.held

    @property
    def held(self) -> int:
        if self._end is None:
            return 0
        return min(self.capacity, self._end - self._first)

    @property
    def end(self) -> int | None:
        return self._end

    @property
    def end_time(self) -> float | None:
        """Engine time up to which audio has been written (None before the first write)."""
        return None if self._end is None else self._end / self.rate

    def index(self, t: float) -> int:
        return int(round(t * self.rate))

    def write(self, start: int, samples: np.ndarray) -> tuple[int, np.ndarray]:
        """Append ``samples`` whose first sample sits at absolute index ``start``.

        Returns ``(gap, accepted)``: the number of silent samples inserted before them and the
        part of ``samples`` that was appended (its head is cut where it overlapped)."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if self._end is None:
            self._first = start
            self._end = start
        if start < self._end:
            cut = min(x.size, self._end - start)
            self.dropped_overlap += cut
            x = x[cut:]
            start += cut
        gap = start - self._end
        if gap > 0:
            self.gap_samples += gap
            self._append_silence(gap)
        self._append(x)
        return gap, x

    def _jump(self, n: int) -> None:
        """Pass over ``n`` samples at once (n ≥ capacity): everything held is dropped and the
        positions passed over read as silence."""
        assert self._end is not None
        self.dropped_overflow += self.held
        self._end += n
        self._first = self._end

    def _append_silence(self, n: int) -> None:
        if n >= self.capacity:
            self._jump(n)
        else:
            self._append(np.zeros(n, np.float32))

    def _append(self, x: np.ndarray) -> None:
        assert self._end is not None
        if x.size > self.capacity:  # the head of an oversized write never enters the ring
            head = x.size - self.capacity
            self._jump(head)
            self.dropped_overflow += head
            x = x[head:]
        if x.size == 0:
            return
        before = self.held
        i0 = self._end % self.capacity
        n1 = min(x.size, self.capacity - i0)
        self._buf[i0 : i0 + n1] = x[:n1]
        if n1 < x.size:
            self._buf[: x.size - n1] = x[n1:]
        self._end += x.size
        self.dropped_overflow += max(0, before + x.size - self.capacity)

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n); silence where nothing is held."""
        out = np.zeros(max(0, n), np.float32)
        if self._end is None or n <= 0:
            return out
        lo = max(start, self.start)
        hi = min(start + n, self._end)
        if hi <= lo:
            return out
        i0 = lo % self.capacity
        m = hi - lo
        n1 = min(m, self.capacity - i0)
        out[lo - start : lo - start + n1] = self._buf[i0 : i0 + n1]
        if n1 < m:
            out[lo - start + n1 : hi - start] = self._buf[: m - n1]
        return out
