"""Text alignment (rtdub.drive.textalign): accuracy per condition, the wrong-text cost
threshold's calibration, real voices, and the speed and memory on a minute of audio.

    python -m benchmarks.textalign [--conditions] [--calibrate] [--real] [--speed] [--json OUT]

The "dubbed" audio is espeak-ng too, but another voice variant, rate and pitch, spoken
phrase by phrase with silences of other lengths between them; its own phoneme events are
the truth. Per condition: the median and 90th percentile absolute error of the aligned
phoneme starts (phonemes matched by symbol), and the share of 25 fps frames inside the
central 60 % of a truth bilabial / open vowel / pause (rtdub.drive.events.from_speech of the
dub's own events) whose aligned class is the same. Calibration: the cost of the right text
and of the other texts of the same language on each condition's audio.

``--real`` (needs $RTDUB_MEDIA and pocketsphinx, the ``train`` extra): real English speech
(the four speaker clips, english_60s.wav in 10 s pieces). pocketsphinx recognises the
words (with errors: that transcript is the "right" text) and force-aligns them with its
own acoustic model; the benchmark reports the cost of the transcript and of the other
pieces' transcripts, and how far the starts of the visual-class runs land from
pocketsphinx's (runs matched by class). Speed: a 60 s dub (several conditions joined), one
process, the best of 3, with the peak of the memory numpy allocates (tracemalloc).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import write_json
from rtdub import tts
from rtdub.defaults import media_path
from rtdub.drive.events import PhoneTimeline, from_speech
from rtdub.drive.phones import BILABIAL, OPEN, PAUSE
from rtdub.drive.textalign import MAX_COST, TextAlignment, align_text

TEXTS = {
    "en": [
        "Peter bought a big map of Madrid, and he walked home past the old market.",
        "My brother baked apple pie for the party, but nobody came before midnight.",
        "Please pass the paper plates, the bread and a bowl of warm soup.",
        "The small boat moved slowly across the bay while the moon came up.",
    ],
    "es": [
        "Mi papá compró un mapa grande de Barcelona, y caminó despacio hasta la playa.",
        "Ayer por la mañana bebimos café amargo en el bar de la plaza mayor.",
        "La abuela preparó una paella magnífica para toda la familia.",
    ],
    "de": [
        "Mein Bruder baut ein kleines Boot, aber am Abend spielt er Klavier im Park.",
        "Der alte Mann kam morgens mit dem Fahrrad zum Markt, um Brot zu kaufen.",
        "Bitte mach das Fenster auf, damit die warme Luft hinausgeht.",
    ],
    "fr": [
        "Mon papa a acheté une belle pomme, puis il a marché jusqu'à la mer.",
        "Le matin, nous buvons du café noir dans la petite maison blanche.",
        "Pierre a pris le bateau pour partir à Marseille avec sa famille.",
    ],
}


@dataclass(frozen=True)
class Condition:
    language: str
    voice: str  # espeak voice of the "dub" (a variant of the language's voice)
    rate: int
    pitch: int
    pauses: tuple[float, ...]  # seconds between the phrases (cycled); () speaks the text in one go

    @property
    def name(self) -> str:
        gaps = "+".join(f"{p:g}" for p in self.pauses) or "none"
        return f"{self.voice} {self.rate}wpm p{self.pitch} pauses {gaps}"


CONDITIONS = [
    Condition("en", "en+f3", 120, 25, ()),
    Condition("en", "en+m7", 220, 80, ()),
    Condition("en", "en+klatt", 180, 60, (0.6, 0.25)),
    Condition("en", "en+f3", 140, 70, (1.2, 0.4)),
    Condition("es", "es+f2", 200, 30, (0.5,)),
    Condition("es", "es+m3", 130, 70, ()),
    Condition("de", "de+m3", 140, 30, (0.8, 0.3)),
    Condition("de", "de+f4", 210, 75, ()),
    Condition("fr", "fr+f4", 190, 75, (0.4, 1.0)),
    Condition("fr", "fr+m2", 125, 35, ()),
]


@dataclass(frozen=True, eq=False)
class Dub:
    samples: np.ndarray
    sample_rate: int
    phonemes: tuple[tts.Phoneme, ...]  # the truth on the dub's clock

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def timeline(self) -> PhoneTimeline:
        return from_speech(tts.Speech(self.samples, self.sample_rate, self.phonemes))


def phrases(text: str) -> list[str]:
    """The text cut after every comma and between the words near the middle of a long phrase."""
    out: list[str] = []
    for part in text.replace(", ", ",|").split("|"):
        words = part.split()
        if len(words) >= 8:
            half = len(words) // 2
            out += [" ".join(words[:half]), " ".join(words[half:])]
        else:
            out.append(part)
    return out


def speak(text: str, voice: str, rate: int, pitch: int, pauses: tuple[float, ...]) -> Dub:
    """``text`` spoken by ``voice``, phrase by phrase with the ``pauses`` (cycled) between."""
    parts = phrases(text) if pauses else [text]
    chunks: list[np.ndarray] = []
    events: list[tts.Phoneme] = []
    t = 0.0
    sr = 22050
    for k, part in enumerate(parts):
        sp = tts.synthesize(part, voice=voice, rate=rate, pitch=pitch)
        sr = sp.sample_rate
        events += [tts.Phoneme(p.symbol, p.start + t, p.end + t, p.stress) for p in sp.phonemes]
        chunks.append(sp.samples)
        t += sp.duration
        if k + 1 < len(parts):
            gap = np.zeros(int(round(pauses[k % len(pauses)] * sr)), np.float32)
            chunks.append(gap)
            t += len(gap) / sr
    return Dub(np.concatenate(chunks), sr, tuple(events))


def boundary_errors(result: TextAlignment, truth: tuple[tts.Phoneme, ...]) -> np.ndarray:
    """|aligned start - true start| of the spoken phonemes matched by symbol, seconds."""
    a = [p for p in result.phonemes if p.symbol not in tts.PAUSES]
    b = [p for p in truth if p.symbol not in tts.PAUSES]
    sm = difflib.SequenceMatcher(None, [p.symbol for p in a], [p.symbol for p in b], autojunk=False)
    err = [abs(a[i + k].start - b[j + k].start) for i, j, n in sm.get_matching_blocks() for k in range(n)]
    if len(err) < 0.8 * len(b):
        raise AssertionError(f"only {len(err)} of {len(b)} phonemes matched by symbol")
    return np.array(err)


def class_at(tl: PhoneTimeline, times: np.ndarray) -> np.ndarray:
    """The class at each time (-1 where no event covers it)."""
    out = np.full(len(times), -1, np.int64)
    if not len(tl.starts):
        return out
    k = np.searchsorted(tl.starts, times, side="right") - 1
    inside = (k >= 0) & (times < tl.ends[np.maximum(k, 0)])
    out[inside] = tl.classes[k[inside]]
    return out


def class_agreement(result: TextAlignment, dub: Dub, cls: int, fps: float = 25.0, core: float = 0.6) -> float:
    """Share of video frames inside the central ``core`` of an event of class ``cls`` in the
    truth timeline (rtdub.drive.events.from_speech of the dub's own events) whose aligned
    class is ``cls`` too (NaN when the truth has no such frame)."""
    truth = dub.timeline()
    spans = [(float(a), float(b)) for a, b, c in zip(truth.starts, truth.ends, truth.classes, strict=True) if c == cls]
    speech = tts.Speech(dub.samples, dub.sample_rate, dub.phonemes)
    frames = tts.frames_in(speech, spans, fps, core)
    if not frames.any():
        return float("nan")
    times = np.flatnonzero(frames) / fps
    return float(np.mean(class_at(result.timeline, times) == cls))


def pause_agreement(result: TextAlignment, dub: Dub, min_s: float = 0.2) -> float:
    """Share of the frames (25 fps) inside truth silences of at least ``min_s`` (less 50 ms at
    each end) that the aligned timeline calls a pause."""
    tl = dub.timeline()
    pauses = [(a + 0.05, b - 0.05) for a, b, c in zip(tl.starts, tl.ends, tl.classes, strict=True) if c == PAUSE]
    # the inserted silences are not events: the gaps between them
    gaps = [(float(tl.ends[k]) + 0.05, float(tl.starts[k + 1]) - 0.05) for k in range(len(tl.starts) - 1)]
    spans = [(a, b) for a, b in pauses + gaps if b - a >= min_s - 0.1]
    times = np.concatenate([np.arange(np.ceil(a * 25), np.floor(b * 25) + 1) / 25 for a, b in spans] or [np.zeros(0)])
    if not len(times):
        return float("nan")
    return float(np.mean(class_at(result.timeline, times) == PAUSE))


def evaluate(cond: Condition, text: str) -> dict[str, float]:
    dub = speak(text, cond.voice, cond.rate, cond.pitch, cond.pauses)
    t0 = time.perf_counter()
    res = align_text(text, cond.language, dub.samples, dub.sample_rate)
    seconds = time.perf_counter() - t0
    err = boundary_errors(res, dub.phonemes)
    return {
        "audio_s": round(dub.duration, 2),
        "cost": round(res.cost, 3),
        "ok": res.ok,
        "alpha": round(res.alpha, 3),
        "rate": res.rate,
        "median_ms": round(1000 * float(np.median(err)), 1),
        "p90_ms": round(1000 * float(np.percentile(err, 90)), 1),
        "bilabial": round(class_agreement(res, dub, BILABIAL), 3),
        "open": round(class_agreement(res, dub, OPEN), 3),
        "pause": round(pause_agreement(res, dub), 3),
        "confident_share": round(res.confident_s / dub.duration, 3),
        "seconds": round(seconds, 3),
    }


def run_conditions() -> list[dict[str, object]]:
    print("condition  text  audio_s  cost  ok  alpha  rate  median_ms  p90_ms  bilabial  open  pause  confident  s")
    rows: list[dict[str, object]] = []
    for cond in CONDITIONS:
        for k, text in enumerate(TEXTS[cond.language]):
            row: dict[str, object] = {"condition": cond.name, "text": k, **evaluate(cond, text)}
            print("  ".join(f"{v}" for v in row.values()), flush=True)
            rows.append(row)
    print("per condition: median of the texts' median errors (ms), worst 90th percentile (ms), worst bilabial / open")
    for cond in CONDITIONS:
        mine = [r for r in rows if r["condition"] == cond.name]
        med = float(np.median([float(r["median_ms"]) for r in mine]))  # type: ignore[arg-type]
        p90 = max(float(r["p90_ms"]) for r in mine)  # type: ignore[arg-type]
        bil = min(float(r["bilabial"]) for r in mine)  # type: ignore[arg-type]
        opn = min(float(r["open"]) for r in mine)  # type: ignore[arg-type]
        print(f"  {cond.name:40s} {med:5.1f} {p90:6.1f} {bil:5.2f} {opn:5.2f}", flush=True)
    return rows


def calibrate() -> dict[str, object]:
    right: list[float] = []
    wrong: list[float] = []
    for cond in CONDITIONS:
        texts = TEXTS[cond.language]
        for k, text in enumerate(texts):
            dub = speak(text, cond.voice, cond.rate, cond.pitch, cond.pauses)
            for m, other in enumerate(texts):
                res = align_text(other, cond.language, dub.samples, dub.sample_rate)
                (right if m == k else wrong).append(res.cost)
    out = {
        "max_cost": MAX_COST,
        "right_above": sum(c > MAX_COST for c in right),
        "wrong_below": sum(c <= MAX_COST for c in wrong),
        "right_max": round(max(right), 3),
        "right_p95": round(float(np.percentile(right, 95)), 3),
        "wrong_min": round(min(wrong), 3),
        "wrong_p5": round(float(np.percentile(wrong, 5)), 3),
        "right": sorted(round(c, 3) for c in right),
        "wrong": sorted(round(c, 3) for c in wrong),
    }
    print(out, flush=True)
    return out


def _class_runs(events: list[tuple[float, float, int]]) -> list[tuple[int, float]]:
    """(class, start) of each run of one class, pauses left out."""
    runs: list[tuple[int, float]] = []
    for s, _, c in events:
        if not runs or runs[-1][0] != c:
            runs.append((c, s))
    return [(c, s) for c, s in runs if c != PAUSE]


def real() -> dict[str, object]:
    from rtdub import media
    from rtdub.drive.phones import espeak_class
    from training.recogniser import Recogniser

    root = media_path()
    if root is None:
        raise SystemExit("--real needs $RTDUB_MEDIA (the shared media folder)")
    pieces: list[tuple[str, np.ndarray]] = []
    for name in ("speaker_a", "speaker_b", "speaker_c", "speaker_d"):
        pieces.append((name, media.load_audio(root / "clips" / f"{name}.mp4", 16000)))
    long = media.load_audio(root / "audio" / "english_60s.wav", 16000)
    pieces += [(f"english_60s[{k}:{k + 10}]", long[k * 16000 : (k + 10) * 16000]) for k in range(0, 60, 10)]
    rec = Recogniser()
    items = []
    for name, wav in pieces:
        pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes()
        rec._decode(rec._words, pcm)
        hyp = rec._words.hyp()
        segs, how = rec.phones(wav)
        if hyp is None or how != "aligned":
            print(f"{name}: pocketsphinx could not align its transcript; left out", flush=True)
            continue
        items.append((name, wav, hyp.hypstr.strip(), segs))
    rows: list[dict[str, object]] = []
    wrong: list[float] = []
    for k, (name, wav, text, segs) in enumerate(items):
        res = align_text(text, "en-us", wav, 16000)
        ours = _class_runs([(p.start, p.end, espeak_class(p.symbol)) for p in res.phonemes])
        theirs = _class_runs([(g.start, g.end, espeak_class(g.phone)) for g in segs])
        sm = difflib.SequenceMatcher(None, [c for c, _ in ours], [c for c, _ in theirs], autojunk=False)
        err = [abs(ours[i + q][1] - theirs[j + q][1]) for i, j, n in sm.get_matching_blocks() for q in range(n)]
        for j in range(len(items)):
            if j != k:
                wrong.append(align_text(items[j][2], "en-us", wav, 16000).cost)
        row: dict[str, object] = {
            "piece": name,
            "cost": round(res.cost, 3),
            "ok": res.ok,
            "alpha": round(res.alpha, 3),
            "rate": res.rate,
            "confident_share": round(res.confident_s * 16000 / len(wav), 3),
            "runs_matched": f"{len(err)}/{len(theirs)}",
            "median_ms_vs_pocketsphinx": round(1000 * float(np.median(err)), 1),
            "text": text,
        }
        print("  ".join(f"{v}" for v in row.values()), flush=True)
        rows.append(row)
    out = {
        "pieces": rows,
        "wrong_min": round(min(wrong), 3),
        "wrong_below": sum(c <= MAX_COST for c in wrong),
        "wrong_n": len(wrong),
        "wrong": sorted(round(c, 3) for c in wrong),
    }
    print({k: v for k, v in out.items() if k != "pieces"}, flush=True)
    return out


def speed(seconds: float = 60.0) -> dict[str, object]:
    texts: list[str] = []
    chunks: list[np.ndarray] = []
    total = 0.0
    k = 0
    while total < seconds:
        cond = [c for c in CONDITIONS if c.language == "en"][k % 4]
        text = TEXTS["en"][k % len(TEXTS["en"])]
        dub = speak(text, cond.voice, cond.rate, cond.pitch, cond.pauses)
        chunks += [dub.samples, np.zeros(int(0.5 * dub.sample_rate), np.float32)]
        texts.append(text)
        total += dub.duration + 0.5
        k += 1
    samples = np.concatenate(chunks)[: int(seconds * 22050)]
    text = " ".join(texts)
    best = float("inf")
    res = None
    for _ in range(3):
        t0 = time.perf_counter()
        res = align_text(text, "en", samples, 22050)
        best = min(best, time.perf_counter() - t0)
    assert res is not None
    tracemalloc.start()
    align_text(text, "en", samples, 22050)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out: dict[str, object] = {
        "audio_s": round(len(samples) / 22050, 1),
        "align_s": round(best, 3),
        "peak_mb": round(peak / 1e6, 1),
        "cost": round(res.cost, 3),
    }
    print(out, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="text alignment accuracy, calibration and speed")
    p.add_argument("--conditions", action="store_true")
    p.add_argument("--calibrate", action="store_true")
    p.add_argument("--real", action="store_true", help="real English speech from $RTDUB_MEDIA (pocketsphinx)")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "ERROR"))
    everything = not (args.conditions or args.calibrate or args.real or args.speed)
    result: dict[str, object] = {}
    if args.conditions or everything:
        rows = run_conditions()
        result["conditions"] = rows
        result["median_ms_overall"] = float(np.median([r["median_ms"] for r in rows]))
    if args.calibrate or everything:
        result["calibration"] = calibrate()
    if args.real:
        result["real"] = real()
    if args.speed or everything:
        result["speed"] = speed()
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
