"""Timed phoneme or viseme events sent by an external TTS beside the dubbed audio of a stream:
the wire format, its bounds and counters, and the clock that places the events on the engine
clock. Front ends (a WebRTC data channel in rtdub/stream/peer.py, the side socket in
rtdub/stream/eventsocket.py) hand each message to :meth:`EventFeed.feed`; the session
(rtdub/stream/session.py) feeds it the dubbed audio's chunks and reads the timeline per frame.

Wire format: one JSON object per message (a data-channel message, or a line of the socket), in
any of the notations of ``rtdub dub --phonemes`` (rtdub/drive/events.py parses each item):

    {"time": 120, "type": "viseme", "value": "p"}      Amazon Polly speech mark (ms)
    {"audioOffset": 1200000, "visemeId": 21}           Azure Speech viseme event (100-ns ticks)
    {"start": 0.12, "end": 0.2, "phoneme": "m"}        rtdub (s, IPA)
    {"reset": true}                                     a new utterance (see Clock)

Polly marks of other types (word, sentence, ssml) are ignored and counted. Point marks (Polly,
Azure) last until the next mark (rtdub/drive/livetimeline.py).

Clock: event times are on the dubbed audio's own clock, counted in samples: time ``s`` is the
sample ``s × 16000`` of the dubbed audio the session's dub source has delivered, counting from
its first sample (time 0) and from the utterance's origin after a reset. Pauses in delivery do
not advance it (a PCM socket that pauses, or audio that comes in bursts, keeps its positions),
so a TTS's own offsets (Polly's ``time``, Azure's ``audioOffset``) can be sent unchanged.
``{"reset": true}`` starts a new utterance: the times that follow count from the next sample
of dubbed audio to arrive (send it just before the utterance's audio); ``{"reset": true,
"origin": s}`` names that position instead (s on the stream's sample clock). Events held past
the new origin are cut there.

Bounds: a message over ``max_message_bytes`` (4 KiB) is refused; messages past a token bucket
(``rate`` a second, bursts of ``burst``) are dropped; the timeline keeps a bounded window
(LiveTimelineConfig). Every refused message is counted by its reason and logged with its
count (the first ten, then every power of ten); nothing here raises for what a client sends.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE
from ..drive.events import PhoneTimeline, parse_phonemes
from ..drive.livetimeline import ACCEPTED, LATE, LiveTimeline, LiveTimelineConfig
from ..exceptions import InputError

logger = logging.getLogger(__name__)

EVENTS_LABEL = "rtdub-events"  # the data channel a client opens for its events
CONTINUITY_S = 0.001  # a chunk this close to where the last one ended continues it


@dataclass(frozen=True)
class EventFeedConfig:
    max_message_bytes: int = 4096
    rate: float = 200.0  # messages a second, sustained (a TTS sends a whole utterance's marks at once)
    burst: int = 500  # messages accepted at once
    timeline: LiveTimelineConfig = field(default_factory=LiveTimelineConfig)

    def __post_init__(self) -> None:
        if not (self.max_message_bytes > 0 and self.rate > 0 and self.burst > 0):
            raise ValueError("max_message_bytes, rate and burst must be > 0")


@dataclass
class FeedCounts:
    """What became of the messages (the /stats of the events input)."""

    messages: int = 0  # received, whatever became of them
    events: int = 0  # accepted into the timeline
    late: int = 0  # accepted, but ended before the frame being shown
    ignored: int = 0  # Polly marks other than visemes
    mapped: int = 0  # symbols no table lists, mapped by the fallback rule
    resets: int = 0
    bad: int = 0  # not JSON, not an object, an unknown notation, a bad value
    oversize: int = 0  # over max_message_bytes
    rate_limited: int = 0
    out_of_order: int = 0  # starting before the newest event ends
    too_far: int = 0  # starting more than max_ahead_s past the frame being shown

    @property
    def refused(self) -> int:
        return self.bad + self.oversize + self.rate_limited + self.out_of_order + self.too_far


class AudioPositions:
    """Where each sample of the dubbed audio landed on the engine clock: a position (seconds of
    samples delivered) maps to engine time by the newest anchor at or before it. A chunk that
    does not continue the previous one (a paused socket re-anchored, a source restarted, a pts
    jump) starts a new anchor. Holds at most ``max_anchors`` (the oldest go)."""

    def __init__(self, rate: int = SAMPLE_RATE, max_anchors: int = 256) -> None:
        self.rate = rate
        self._anchors: deque[tuple[float, float]] = deque(maxlen=max_anchors)  # (position s, engine s)
        self._samples = 0
        self._next: float | None = None  # engine time the next chunk continues at
        self.changes = 0  # anchors added (snapshots are rebuilt when it moves)

    @property
    def delivered(self) -> float:
        """Seconds of dubbed audio delivered: the position of the next sample."""
        return self._samples / self.rate

    @property
    def ready(self) -> bool:
        return bool(self._anchors)

    def note(self, t: float, n: int) -> None:
        """``n`` samples were written from engine time ``t``."""
        if self._next is None or abs(t - self._next) > CONTINUITY_S:
            self._anchors.append((self.delivered, t))
            self.changes += 1
        self._samples += n
        self._next = t + n / self.rate

    def to_engine(self, pos: np.ndarray) -> np.ndarray:
        p = np.asarray(pos, np.float64)
        if not self._anchors:
            raise RuntimeError("no dubbed audio yet: positions have no engine time")
        a = np.asarray(self._anchors, np.float64)
        k = np.clip(np.searchsorted(a[:, 0], p, side="right") - 1, 0, len(a) - 1)
        return a[k, 1] + (p - a[k, 0])

    def to_position(self, t: float) -> float:
        """The position playing at engine time ``t`` (within the stretch it falls in)."""
        if not self._anchors:
            raise RuntimeError("no dubbed audio yet: engine times have no position")
        best = self._anchors[0]
        for anchor in self._anchors:
            if anchor[1] <= t:
                best = anchor
        return best[0] + (t - best[1])


class EventFeed:
    """One stream's events input: parses, bounds and counts messages and holds the timeline."""

    def __init__(
        self, config: EventFeedConfig | None = None, clock: Callable[[], float] = time.monotonic, name: str = "events"
    ) -> None:
        self.config = config or EventFeedConfig()
        self.clock = clock
        self.name = name
        self.timeline = LiveTimeline(self.config.timeline)
        self.positions = AudioPositions()
        self.counts = FeedCounts()
        self.origin = 0.0  # position of the current utterance's time 0
        self._tokens = float(self.config.burst)
        self._refilled = clock()
        self._cached: tuple[tuple[int, int], PhoneTimeline] | None = None

    # --- input ---------------------------------------------------------------------------

    def note_audio(self, t: float, n: int) -> None:
        """The session wrote ``n`` samples of dubbed audio from engine time ``t``."""
        if n > 0:
            self.positions.note(t, n)

    def feed(self, message: str | bytes) -> str:
        """Take one message; returns what became of it (a FeedCounts field name)."""
        c = self.counts
        c.messages += 1
        size = len(message) if isinstance(message, bytes) else len(message.encode("utf-8", "replace"))
        if size > self.config.max_message_bytes:
            return self._refuse("oversize", f"{size} bytes, over {self.config.max_message_bytes}")
        if not self._take_token():
            return self._refuse("rate_limited", f"over {self.config.rate:g} messages/s")
        try:
            text = message.decode("utf-8") if isinstance(message, bytes) else message
            obj = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            return self._refuse("bad", f"not JSON ({type(exc).__name__})")
        if not isinstance(obj, dict):
            return self._refuse("bad", f"a JSON {type(obj).__name__}, not an object")
        if "reset" in obj:
            return self._reset(obj)
        keys = {str(k).lower() for k in obj}
        if {"time", "type"} <= keys and str(_get(obj, "type")) != "viseme":
            c.ignored += 1
            return "ignored"
        try:
            tl = parse_phonemes(text, self.name)
        except InputError as exc:
            return self._refuse("bad", exc.problem)
        return self._add(tl)

    def _add(self, tl: PhoneTimeline) -> str:
        c = self.counts
        if len(tl.starts) != 1:  # one object is one event
            return self._refuse("bad", f"{len(tl.starts)} events in one message")
        start, end, cls = self.origin + float(tl.starts[0]), self.origin + float(tl.ends[0]), int(tl.classes[0])
        if tl.source in ("polly", "azure"):
            why = self.timeline.add_mark(start, cls)
        else:
            why = self.timeline.add_span(start, end, cls)
        if why not in (ACCEPTED, LATE):
            return self._refuse(why, f"starts at {start:.3f} s, newest event ends {self.timeline.frontier:.3f} s")
        c.events += 1
        c.mapped += tl.mapped
        if why == LATE:
            c.late += 1
            return "late"
        return "events"

    def _reset(self, obj: dict[str, Any]) -> str:
        if obj.get("reset") is not True:
            return self._refuse("bad", f"reset must be true, got {obj.get('reset')!r}")
        origin = obj.get("origin", self.positions.delivered)
        if isinstance(origin, bool) or not isinstance(origin, (int, float)) or not math.isfinite(origin) or origin < 0:
            return self._refuse("bad", f"origin must be a number >= 0 (s), got {origin!r}")
        self.origin = float(origin)
        self.timeline.reset(self.origin)
        self.counts.resets += 1
        n = self.counts.resets
        logger.info(
            "events %s: new utterance from %.3f s of dubbed audio (reset %d)", self.name, self.origin, n,
            extra={"events": self.name, "origin": self.origin, "resets": n},
        )  # fmt: skip
        return "resets"

    def _take_token(self) -> bool:
        now = self.clock()
        self._tokens = min(float(self.config.burst), self._tokens + (now - self._refilled) * self.config.rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refuse(self, why: str, detail: str) -> str:
        n = getattr(self.counts, why) + 1
        setattr(self.counts, why, n)
        total = self.counts.refused
        if total <= 10 or math.log10(total).is_integer():
            logger.warning(
                "events %s: message %d refused (%s: %s); %d refused so far",
                self.name, self.counts.messages, why, detail, total,
                extra={"events": self.name, "reason": why, "refused": total, "messages": self.counts.messages},
            )  # fmt: skip
        return why

    # --- output --------------------------------------------------------------------------

    def at(self, t: float) -> PhoneTimeline | None:
        """The events on the engine clock for the frame shown at engine time ``t`` (old events
        are dropped behind it); None before any dubbed audio has placed them."""
        if not self.positions.ready:
            return None
        self.timeline.advance(self.positions.to_position(t))
        key = (self.timeline.version, self.positions.changes)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self.timeline.snapshot(self.positions.to_engine, "stream"))
        return self._cached[1]

    def stats(self) -> dict[str, Any]:
        tl = self.timeline
        return asdict(self.counts) | {
            "refused": self.counts.refused,
            "held": len(tl),
            "dropped_old": tl.dropped_old,
            "dropped_overflow": tl.dropped_overflow,
            "covered_until_s": round(tl.frontier, 3) if math.isfinite(tl.frontier) else None,
            "audio_s": round(self.positions.delivered, 3),
        }


def _get(d: dict[str, Any], key: str) -> Any:
    for k, v in d.items():
        if str(k).lower() == key:
            return v
    return None


__all__ = ["AudioPositions", "EVENTS_LABEL", "EventFeed", "EventFeedConfig", "FeedCounts"]
