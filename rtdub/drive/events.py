"""Timed phonemes and visemes: the one internal timeline every phonetic input becomes, and the
readers of the files a TTS reports them in.

    Amazon Polly speech marks (JSON lines, ms)     ─┐
    Azure Speech viseme events (JSON list, ticks)  ─┼─► PhoneTimeline: (start, end, class) on the
    rtdub phonemes (JSON list, s, IPA)             ─┤    dubbed audio's clock, classes from
    espeak-ng's own events (rtdub.tts.Speech)      ─┘    rtdub.drive.phones.VISEME_CLASSES

Point marks (Polly, Azure) last until the next mark; the last one lasts ``LAST_MARK_S`` or to
the end of the audio. A frame no event covers reads as a pause in the timeline; the drives
decide what to do with it (:meth:`PhoneTimeline.covered`).

Every problem with a file is an :class:`~rtdub.exceptions.InputError` naming the file and the
problem (exit code 2 on the command line): not JSON, an unknown format, events out of order or
ending before they start, no events at all, or events that do not overlap the audio. Symbols no
table lists are mapped by the rule in rtdub/drive/phones.py and counted in
:attr:`PhoneTimeline.mapped`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import InputError
from ..tts import Speech, lip_closures
from .phones import BILABIAL, N_CLASSES, OTHER, PAUSE, VISEME_CLASSES, azure_class, espeak_class, ipa_class, polly_class

logger = logging.getLogger(__name__)

LAST_MARK_S = 0.15  # how long a point mark with no successor lasts (at most)
AZURE_TICKS_PER_S = 10_000_000  # audioOffset is in 100-ns ticks
FORMATS = ("polly", "azure", "rtdub", "espeak")
_FORMAT_HELP = (
    'expected Amazon Polly speech marks (JSON lines like {"time": 120, "type": "viseme", "value": "p"}), '
    'Azure viseme events (a JSON list of {"audioOffset": TICKS, "visemeId": N}) or rtdub phonemes '
    '(a JSON list of {"start": s, "end": s, "phoneme": "IPA"})'
)


@dataclass(frozen=True)
class PhoneTimeline:
    """Visual phoneme classes on the dubbed audio's clock, sorted and not overlapping."""

    starts: np.ndarray  # (N,) float64 seconds
    ends: np.ndarray  # (N,) float64 seconds, ends[i] <= starts[i + 1]
    classes: np.ndarray  # (N,) int64 indices into VISEME_CLASSES
    source: str = "rtdub"  # one of FORMATS
    mapped: int = 0  # symbols no table listed, mapped by the fallback rule

    def __post_init__(self) -> None:
        n = len(self.starts)
        if len(self.ends) != n or len(self.classes) != n:
            raise ValueError("starts, ends and classes must have one entry per event")
        if n and (np.any(self.ends < self.starts) or np.any(self.starts[1:] < self.ends[:-1] - 1e-9)):
            raise ValueError("events must be sorted, each ending after it starts and before the next starts")
        if n and (self.classes.min() < 0 or self.classes.max() >= N_CLASSES):
            raise ValueError(f"classes must be indices into VISEME_CLASSES (0-{N_CLASSES - 1})")

    @property
    def span(self) -> tuple[float, float]:
        """(first start, last end), or (0, 0) for an empty timeline."""
        return (float(self.starts[0]), float(self.ends[-1])) if len(self.starts) else (0.0, 0.0)

    def occupancy(self, t0: float, step: float, n: int) -> np.ndarray:
        """(n, N_CLASSES) float32: the share of each bin ``[t0 + i·step, t0 + (i+1)·step)`` each
        class covers; time no event covers counts as a pause, so rows sum to 1."""
        out = np.zeros((n, N_CLASSES), np.float32)
        if n <= 0:
            return out
        edges = t0 + step * np.arange(n + 1)
        lo = np.searchsorted(self.ends, edges[0], side="right")
        hi = np.searchsorted(self.starts, edges[-1], side="left")
        for k in range(lo, hi):
            a, b, c = self.starts[k], self.ends[k], int(self.classes[k])
            i0 = max(0, int(math.floor((a - t0) / step)))
            i1 = min(n - 1, int(math.floor((b - t0) / step)))
            for i in range(i0, i1 + 1):
                cover = min(b, edges[i + 1]) - max(a, edges[i])
                if cover > 0:
                    out[i, c] += cover / step
        out[:, PAUSE] += np.clip(1.0 - out.sum(axis=1), 0.0, 1.0)
        return out

    def covered(self, t0: float, t1: float) -> bool:
        """Whether events (pauses included) cover all of ``[t0, t1]``."""
        if not len(self.starts) or t0 < self.starts[0] - 1e-9 or t1 > self.ends[-1] + 1e-9:
            return False
        lo = int(np.searchsorted(self.ends, t0, side="right"))
        pos = t0
        for k in range(lo, len(self.starts)):
            if self.starts[k] > pos + 1e-6:
                return False
            pos = max(pos, float(self.ends[k]))
            if pos >= t1 - 1e-9:
                return True
        return False

    def counts(self) -> dict[str, int]:
        """Events per class name (for logs and reports)."""
        ids, n = np.unique(self.classes, return_counts=True)
        return {VISEME_CLASSES[int(i)]: int(c) for i, c in zip(ids, n, strict=True)}


def timeline(
    events: Sequence[tuple[float, float, int]], source: str = "rtdub", mapped: int = 0
) -> PhoneTimeline:
    """A timeline from sorted ``(start, end, class)`` events."""
    arr = np.asarray(events, np.float64).reshape(-1, 3)
    return PhoneTimeline(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].astype(np.int64), source, mapped)


def from_speech(speech: Speech) -> PhoneTimeline:
    """The timeline of espeak-ng's own phoneme events (rtdub.tts.synthesize).

    espeak times a bilabial stop from its release; the lips close during the silence before
    it (rtdub.tts.lip_closures finds that stretch in the audio). So each /p b/ becomes a
    bilabial event over its closure, and what follows its release takes the next phoneme's
    class, where the lips are heading."""
    phonemes = [p for p in speech.phonemes if p.end > p.start]
    ev = [(p.start, p.end, espeak_class(p.symbol)) for p in phonemes]
    following = {id(p): espeak_class(q.symbol) for p, q in zip(phonemes, phonemes[1:], strict=False)}
    for p, a, b in lip_closures(speech):
        if p.symbol.startswith("m"):
            continue
        ev = _overlay(ev, a, b, BILABIAL)
        if b < p.end:
            ev = _overlay(ev, b, p.end, following.get(id(p), PAUSE))
    return timeline(ev, "espeak")


def _overlay(events: list[tuple[float, float, int]], a: float, b: float, cls: int) -> list[tuple[float, float, int]]:
    """``events`` with ``[a, b)`` set to ``cls`` (the events it overlaps are cut)."""
    out: list[tuple[float, float, int]] = []
    for s, e, c in events:
        if e <= a or s >= b:
            out.append((s, e, c))
            continue
        if s < a:
            out.append((s, a, c))
        if e > b:
            out.append((b, e, c))
    out.append((a, b, cls))
    return sorted(out)


# --- files -------------------------------------------------------------------------------


def load_phonemes(path: str | Path, audio_duration: float | None = None) -> PhoneTimeline:
    """Read a phoneme or viseme file, detecting its format (module docstring). With
    ``audio_duration``, events must overlap ``[0, audio_duration]`` and are cut to it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(str(p), "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(p), f"unreadable ({exc})") from None
    tl = parse_phonemes(text, str(p))
    if audio_duration is not None:
        tl = _fit_to_audio(tl, audio_duration, str(p))
    if tl.mapped:
        logger.warning(
            "%s: %d symbols not in the %s table, mapped by the fallback rule", p, tl.mapped, tl.source,
            extra={"file": str(p), "mapped": tl.mapped, "format": tl.source},
        )  # fmt: skip
    return tl


def parse_phonemes(text: str, name: str = "<phonemes>") -> PhoneTimeline:
    """Parse the text of a phoneme or viseme file; ``name`` labels the errors."""
    body = text.strip()
    if not body:
        raise InputError(name, "empty file; " + _FORMAT_HELP)
    records: list[Any]
    try:
        whole = json.loads(body)
    except json.JSONDecodeError:
        whole = None
        records = _json_lines(body, name)
    except RecursionError:
        raise InputError(name, "JSON nested too deeply") from None
    else:
        records = whole if isinstance(whole, list) else [whole]
    dicts = [r for r in records if isinstance(r, dict)]
    if len(dicts) != len(records) or not dicts:
        raise InputError(name, "unknown format: " + _FORMAT_HELP)
    keys = {k.lower() for d in dicts for k in d}
    if {"time", "type"} <= keys:
        return _polly(dicts, name)
    if {"audiooffset", "visemeid"} <= keys:
        return _azure(dicts, name)
    if {"start", "end", "phoneme"} <= keys:
        return _rtdub(dicts, name)
    raise InputError(name, "unknown format: " + _FORMAT_HELP)


def _json_lines(body: str, name: str) -> list[Any]:
    out = []
    for i, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(name, f"line {i}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise InputError(name, f"line {i}: JSON nested too deeply") from None
    return out


def _get(d: dict[str, Any], key: str) -> Any:
    for k, v in d.items():
        if k.lower() == key:
            return v
    return None


def _number(v: Any, what: str, name: str, i: int) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or v < 0:
        raise InputError(name, f"event {i}: {what} must be a number >= 0, got {v!r}")
    return float(v)


def _marks(
    marks: Iterable[tuple[float, str | int]], classify: Callable[[Any], int | None], source: str, name: str
) -> PhoneTimeline:
    """Point marks (time, symbol) -> events lasting until the next mark."""
    pts: list[tuple[float, int]] = []
    mapped = 0
    last = -math.inf
    for i, (t, sym) in enumerate(marks, 1):
        if t < last - 1e-9:
            raise InputError(name, f"events out of order at mark {i} ({t:.3f} s after {last:.3f} s)")
        last = t
        cls = classify(sym)
        if cls is None:
            cls = ipa_class(str(sym)) if isinstance(sym, str) else None
            cls = OTHER if cls is None else cls
            mapped += 1
        pts.append((t, cls))
    if not pts:
        raise InputError(name, "no viseme events")
    ev = []
    for k, (t, c) in enumerate(pts):
        end = pts[k + 1][0] if k + 1 < len(pts) else t + LAST_MARK_S
        if end > t:
            ev.append((t, end, c))
    return timeline(ev, source, mapped)


def _polly(dicts: list[dict[str, Any]], name: str) -> PhoneTimeline:
    marks: list[tuple[float, str | int]] = []
    for i, d in enumerate(dicts, 1):
        if str(_get(d, "type")) != "viseme":
            continue  # sentence, word and ssml marks carry no mouth shape
        value = _get(d, "value")
        if not isinstance(value, str):
            raise InputError(name, f"mark {i}: a viseme mark needs a string value, got {value!r}")
        marks.append((_number(_get(d, "time"), "time (ms)", name, i) / 1000.0, value))
    if not marks:
        types = sorted({str(_get(d, "type")) for d in dicts})
        raise InputError(name, f"no viseme marks (only {', '.join(types)}): ask Polly for SpeechMarkTypes viseme")
    return _marks(marks, polly_class, "polly", name)


def _azure(dicts: list[dict[str, Any]], name: str) -> PhoneTimeline:
    marks: list[tuple[float, str | int]] = []
    for i, d in enumerate(dicts, 1):
        t = _number(_get(d, "audiooffset"), "audioOffset (100-ns ticks)", name, i) / AZURE_TICKS_PER_S
        vid = _get(d, "visemeid")
        if isinstance(vid, bool) or not isinstance(vid, int):
            raise InputError(name, f"event {i}: visemeId must be a whole number, got {vid!r}")
        if azure_class(vid) is None:
            raise InputError(name, f"event {i}: visemeId {vid} is outside Azure's 0-21")
        marks.append((t, vid))
    return _marks(marks, lambda v: azure_class(int(v)), "azure", name)


def _rtdub(dicts: list[dict[str, Any]], name: str) -> PhoneTimeline:
    ev: list[tuple[float, float, int]] = []
    mapped = 0
    last_end = -math.inf
    for i, d in enumerate(dicts, 1):
        a = _number(_get(d, "start"), "start (s)", name, i)
        b = _number(_get(d, "end"), "end (s)", name, i)
        sym = _get(d, "phoneme")
        if not isinstance(sym, str):
            raise InputError(name, f"event {i}: phoneme must be a string, got {sym!r}")
        if b < a:
            raise InputError(name, f"event {i}: ends at {b:.3f} s, before it starts at {a:.3f} s")
        if a < last_end - 1e-3:
            raise InputError(name, f"events out of order at event {i} (starts {a:.3f} s, before {last_end:.3f} s)")
        a = max(a, last_end) if last_end > -math.inf else a
        last_end = max(b, a)
        cls = ipa_class(sym)
        if cls is None:
            cls, mapped = OTHER, mapped + 1
        if b > a:
            ev.append((a, b, cls))
    if not ev:
        raise InputError(name, "no phonemes with a duration")
    return timeline(ev, "rtdub", mapped)


def _fit_to_audio(tl: PhoneTimeline, duration: float, name: str) -> PhoneTimeline:
    a, b = tl.span
    if a >= duration or b <= 0:
        raise InputError(name, f"the events ({a:.2f}-{b:.2f} s) do not overlap the audio (0-{duration:.2f} s)")
    keep = tl.starts < duration
    ends = np.minimum(tl.ends[keep], duration)
    return PhoneTimeline(tl.starts[keep], ends, tl.classes[keep], tl.source, tl.mapped)
