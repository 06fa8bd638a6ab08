"""A phoneme timeline that grows while a stream plays: events arrive one at a time from an
external TTS and are held, bounded, on the dubbed audio's own clock.

    point mark (Polly, Azure) ─┐                           ┌─► snapshot(): PhoneTimeline
    span (rtdub)               ┼─► LiveTimeline (bounded) ─┤   (mapped onto the engine clock)
    reset (a new utterance)   ─┘                           └─► covered_until (newest event's end)

Clock: positions in seconds on the dubbed audio of the stream (rtdub/stream/eventfeed.py maps
them onto the engine clock). Events must come in order: an event that starts before the newest
one ends is refused (counted by the caller). A point mark lasts until the next mark arrives; until
then it is held *open* with a provisional end ``LAST_MARK_S`` after it, so ``covered_until`` never
runs further than the sender has spoken for, and a late mark leaves the frames past it to the
audio drive (PhoneticDrive's fade).

Bounds (the drop policy): events that ended more than ``keep_s`` before the playhead are
dropped (:meth:`advance`); at most ``max_events`` are held (the oldest go first); an event
starting more than ``max_ahead_s`` after the playhead is refused, so one absurd time cannot
block every later event as out of order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .events import LAST_MARK_S, PhoneTimeline
from .phones import N_CLASSES


@dataclass(frozen=True)
class LiveTimelineConfig:
    keep_s: float = 10.0  # events ending this long before the playhead are dropped
    max_events: int = 4096  # held at most (oldest dropped first)
    max_ahead_s: float = 60.0  # an event starting further past the playhead is refused
    last_mark_s: float = LAST_MARK_S  # provisional length of the newest point mark

    def __post_init__(self) -> None:
        if not (self.keep_s > 0 and self.max_events > 0 and self.max_ahead_s > 0 and self.last_mark_s > 0):
            raise ValueError("keep_s, max_events, max_ahead_s and last_mark_s must be > 0")


# why an event was refused (the caller counts them)
ACCEPTED, OUT_OF_ORDER, TOO_FAR, LATE = "accepted", "out_of_order", "too_far", "late"


class LiveTimeline:
    """Events on the dubbed audio's clock, oldest first; single-threaded (the event loop)."""

    def __init__(self, config: LiveTimelineConfig | None = None) -> None:
        self.config = config or LiveTimelineConfig()
        self._spans: deque[tuple[float, float, int]] = deque()  # closed events
        self._open: tuple[float, int] | None = None  # the newest point mark (time, class)
        self.playhead = -math.inf  # position of the newest frame shown
        self.version = 0  # bumped on every change (snapshots rebuild only then)
        self.dropped_old = 0  # ended keep_s before the playhead
        self.dropped_overflow = 0  # over max_events

    def __len__(self) -> int:
        return len(self._spans) + (self._open is not None)

    @property
    def frontier(self) -> float:
        """Where the newest event ends (an open mark's provisional end); -inf when empty."""
        if self._open is not None:
            return self._open[0] + self.config.last_mark_s
        return self._spans[-1][1] if self._spans else -math.inf

    def _newest_time(self) -> float:
        """The time a new event may not start before."""
        if self._open is not None:
            return self._open[0]
        return self._spans[-1][1] if self._spans else -math.inf

    def _check(self, start: float) -> str:
        if start < self._newest_time() - 1e-6:
            return OUT_OF_ORDER
        if math.isfinite(self.playhead) and start > self.playhead + self.config.max_ahead_s:
            return TOO_FAR
        return ACCEPTED

    def add_mark(self, t: float, cls: int) -> str:
        """A point mark at ``t`` (s): it lasts until the next event. Returns ACCEPTED or why not."""
        _valid_class(cls)
        why = self._check(t)
        if why != ACCEPTED:
            return why
        self._close_open(t)
        self._open = (t, cls)
        return self._added(t + self.config.last_mark_s)

    def add_span(self, start: float, end: float, cls: int) -> str:
        """An event over ``[start, end]`` (s). Returns ACCEPTED or why not."""
        _valid_class(cls)
        if not end >= start:
            raise ValueError(f"an event must end after it starts ({start} > {end})")
        why = self._check(start)
        if why != ACCEPTED:
            return why
        self._close_open(start)
        start = max(start, self._newest_time())  # within the tolerance: touching, not overlapping
        if end > start:
            self._spans.append((start, max(end, start), cls))
        return self._added(end)

    def _added(self, end: float) -> str:
        self.version += 1
        self._bound()
        return LATE if end < self.playhead else ACCEPTED

    def _close_open(self, at: float) -> None:
        """The open mark ends where the next event starts."""
        if self._open is None:
            return
        t, c = self._open
        self._open = None
        if at > t:
            self._spans.append((t, at, c))

    def reset(self, origin: float) -> None:
        """A new utterance starts at ``origin``: events held past it are cut there (the new
        utterance's events replace them) and the open mark ends at it at the latest."""
        if self._open is not None:
            t, c = self._open
            self._open = None
            end = min(origin, t + self.config.last_mark_s)
            if end > t:
                self._spans.append((t, end, c))
        while self._spans and self._spans[-1][0] >= origin:
            self._spans.pop()
        if self._spans and self._spans[-1][1] > origin:
            s, _, c = self._spans.pop()
            self._spans.append((s, origin, c))
        self.version += 1

    def advance(self, playhead: float) -> None:
        """The frame at ``playhead`` is being shown: drop what ended ``keep_s`` before it."""
        self.playhead = max(self.playhead, playhead)
        self._bound()

    def _bound(self) -> None:
        cut = self.playhead - self.config.keep_s
        while self._spans and self._spans[0][1] < cut:
            self._spans.popleft()
            self.dropped_old += 1
            self.version += 1
        while len(self) > self.config.max_events and self._spans:
            self._spans.popleft()
            self.dropped_overflow += 1
            self.version += 1

    def snapshot(
        self, to_clock: Callable[[np.ndarray], np.ndarray] | None = None, source: str = "stream"
    ) -> PhoneTimeline:
        """The held events as a :class:`PhoneTimeline` (the open mark with its provisional end),
        mapped through ``to_clock`` (positions -> another clock, monotone on each stretch).
        Where the mapping steps back (audio that overlapped), events are cut to stay in order."""
        ev = list(self._spans)
        if self._open is not None:
            t, c = self._open
            ev.append((t, t + self.config.last_mark_s, c))
        arr = np.asarray(ev, np.float64).reshape(-1, 3)
        starts, ends = arr[:, 0], arr[:, 1]
        if to_clock is not None and len(arr):
            starts, ends = to_clock(starts), to_clock(ends)
            ends = np.maximum.accumulate(np.maximum(ends, starts))
            starts = np.maximum(starts, np.concatenate([[-np.inf], ends[:-1]]))
        return PhoneTimeline(starts.copy(), ends.copy(), arr[:, 2].astype(np.int64), source)


def _valid_class(cls: int) -> None:
    if not 0 <= cls < N_CLASSES:
        raise ValueError(f"class {cls} is not an index into VISEME_CLASSES")


__all__ = ["ACCEPTED", "LATE", "LiveTimeline", "LiveTimelineConfig", "OUT_OF_ORDER", "TOO_FAR"]
