"""AV offset on shifted audio: the lip-sync expert, the mouth-opening evidence and the two combined.

    python -m benchmarks.av_offset [--data data/train] [--offsets runs/offsets_train.json] \
        [--out benchmarks/results] [--dev ../shared/media/clips]

Trials as ``training/eval_sync.py`` makes them: every clip is cut into segments of
``--segment`` seconds, and for each audio delay d in −8…+8 frames (the audio read d frames
late) the expert's distance curve (rtdub/measure/avsync.py, as ``rtdub eval`` computes it on a
clip that long) and the evidence's correlation curve (rtdub/measure/phonesync.py: the
audio-to-lip model's gap against the tracked inner-lip gap) are taken over ±15 frames. A clip's
own lag (training.offset_check's reading in ``--offsets``, when decided and at least 2 frames,
the rule train_sync's ``--audio-offsets`` applies) is part of the truth: −(lag + d).

Identities:
- training: those the expert and the audio-to-lip model trained on (the real KristiNoem,
  Obama, andrew, and the generated clips both saw). The combination's weight is chosen on
  them only, one identity left out at a time (the table's LOIO row), and the shipped weight
  on all of them.
- left out: real identities neither model trained on (feifeili, social_d10, d11, d20).
- unreliable: social clips whose audio is music or mimed (d6, d12, d14): shown, not counted.
- dev (``--dev``, once): the dev clips tracked here from the videos, delay 0 taken as in sync.

Writes OUT/av_offset.json and OUT/av_offset.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rtdub import audio, media
from rtdub.drive.phones import N_CLASSES
from rtdub.face.lipunits import inner_gap_batch
from rtdub.measure.avsync import VSHIFT, SyncNetExpert, offset_distances
from rtdub.measure.phonesync import (
    CombineRule,
    GapPredictor,
    PhoneRecogniser,
    PhoneSpan,
    centre,
    combine,
    confidence,
    evidence_curve,
    span_classes,
    standardise,
    unbiased,
)

from .common import write_json

logger = logging.getLogger("benchmarks.av_offset")

TRAINING = {
    "KristiNoem": "real_KristiNoem",
    "Obama": "real_Obama_clip*",
    "andrew": "real_andrew_clip_*",
    "emo_talk_hb": "generated_emo_talk_hb",
    "emo_talk_kara": "generated_emo_talk_kara",
    "vasa-1_10": "generated_vasa-1_10",
    "vasa-1_3": "generated_vasa-1_3",
    "vasa-1_l2": "generated_vasa-1_l2",
}
LEFT_OUT = {
    "feifeili": "real_feifeili_*",
    "social_d10": "real_social_d10",
    "social_d11": "real_social_d11",
    "social_d20": "real_social_d20",
}
UNRELIABLE = {"social_d6": "real_social_d6", "social_d12": "real_social_d12", "social_d14": "real_social_d14"}
REAL_TRAINING = ("KristiNoem", "Obama", "andrew")  # the class table is fitted on these (real lips)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
ABS_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)  # distance per unit of correlation
MIN_CONFIDENCE = (0.0, 0.05, 0.1)
SOURCES = {"a2l": ("a2l",), "phones": ("phones",), "both": ("a2l", "phones")}


@dataclass(frozen=True)
class Tracks:
    """What a trial needs of one clip."""

    name: str
    fps: float
    video: np.ndarray  # (N - F + 1, E) expert video embeddings
    gap: np.ndarray  # (N,) tracked inner-lip gap (nan: no face)
    mel: np.ndarray  # whole-signal log-mel
    wav: np.ndarray  # 16 kHz float
    lag: int  # frames the clip's own audio lags its picture


@dataclass(frozen=True)
class ClipPhones:
    """A clip's recognised classes on the audio frame grid (index g: audio frame g - pad)."""

    name: str
    identity: str
    gap: np.ndarray  # (N,)
    classes: np.ndarray  # (N + 2·pad,)
    pad: int
    lag: int


@dataclass(frozen=True)
class Trial:
    group: str
    identity: str
    clip: str
    start: int
    stop: int
    delay: int
    truth: int
    distances: np.ndarray  # (31,)
    curve: np.ndarray  # (31,) the audio-to-lip evidence


def clip_trials(
    t: Tracks, group: str, identity: str, expert: SyncNetExpert, gp: GapPredictor, segment_s: float, max_delay: int
) -> list[Trial]:
    """One trial per (segment, delay); the audio embedded and predicted once on a frame grid
    that reaches max_delay frames beyond both ends."""
    n = len(t.video)
    pad = max_delay
    grid = grid_times(len(t.gap), t.fps, pad)
    aw = expert.audio_windows(t.mel, grid[: n + 2 * pad])
    a = np.concatenate([expert.embed_audio(aw[s : s + 128]) for s in range(0, len(aw), 128)])
    pred = gp.predict(t.mel, grid)
    out = []
    for s0, s1 in segments(n, t.fps, segment_s):
        for d in range(-max_delay, max_delay + 1):
            # audio read d frames late: frame i hears grid frame i - d (grid index i - d + pad)
            dist = offset_distances(t.video[s0:s1], a[s0 - d + pad : s1 - d + pad])
            cur = evidence_curve(t.gap[s0:s1], pred[s0 - d + pad : s1 - d + pad])
            out.append(Trial(group, identity, t.name, s0, s1, d, -(t.lag + d), dist, cur))
    return out


def grid_times(n: int, fps: float, pad: int) -> np.ndarray:
    return (np.arange(-pad, n + pad) / fps).astype(np.float64)


def segments(n: int, fps: float, segment_s: float) -> list[tuple[int, int]]:
    seg = max(VSHIFT + 1, int(round(segment_s * fps)))
    return [(s0, min(n, s0 + seg)) for s0 in range(0, max(1, n - seg + 1), seg)]


def clip_phones(t: Tracks, identity: str, pad: int, cache: Path | None, rec: PhoneRecogniser | None) -> ClipPhones:
    """The clip's recognised classes (pocketsphinx), cached as JSON spans in ``cache``."""
    f = cache / f"{t.name}.json" if cache is not None else None
    if f is not None and f.is_file():
        spans = [PhoneSpan(int(c), float(a), float(b)) for c, a, b in json.loads(f.read_text())]
    else:
        assert rec is not None
        spans = rec.spans(t.wav)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps([[p.cls, p.start, p.end] for p in spans]))
    classes = span_classes(spans, grid_times(len(t.gap), t.fps, pad))
    return ClipPhones(t.name, identity, t.gap, classes, pad, t.lag)


def fit_class_gap(clips: list[ClipPhones]) -> tuple[float, ...]:
    """Mean z-scored gap per visual class: the class sounding at audio frame i + lag against
    the gap of video frame i (the clip's own lag removed)."""
    total, count = np.zeros(N_CLASSES), np.zeros(N_CLASSES)
    for c in clips:
        n = len(c.gap)
        idx = np.clip(np.arange(n) + c.lag + c.pad, 0, len(c.classes) - 1)
        ok = np.isfinite(c.gap)
        if ok.sum() < 2:
            continue
        z = (c.gap[ok] - c.gap[ok].mean()) / max(float(c.gap[ok].std()), 1e-9)
        np.add.at(total, c.classes[idx][ok], z)
        np.add.at(count, c.classes[idx][ok], 1)
    return tuple(float(x) for x in np.where(count > 0, total / np.maximum(count, 1), 0.0))


def phone_curves(trials: list[Trial], phones: dict[str, ClipPhones], table: tuple[float, ...]) -> np.ndarray:
    """(T, 31) the recognised phones' correlation curve of every trial (nan rows: no phones)."""
    tab = np.asarray(table, np.float64)
    out = np.full((len(trials), 2 * VSHIFT + 1), np.nan)
    for k, t in enumerate(trials):
        c = phones.get(t.clip)
        if c is None:
            continue
        pred = tab[c.classes]
        out[k] = evidence_curve(c.gap[t.start : t.stop], pred[t.start - t.delay + c.pad : t.stop - t.delay + c.pad])
    return out


def shard_tracks(path: Path, expert: SyncNetExpert, lag: int) -> Tracks:
    z = np.load(path)
    from rtdub.face.lipunits import lip_points

    canon = z["canon"]
    lips = np.stack([lip_points(c) for c in canon])
    gap = inner_gap_batch(lips).astype(np.float64)
    gap[~(z["valid"] & np.isfinite(gap))] = np.nan
    crops = z["crops"]
    vw = expert.video_windows(crops)
    v = np.concatenate([expert.embed_video(vw[s : s + 64]) for s in range(0, len(vw), 64)])
    wav = np.asarray(z["wav"], np.float32)
    mel = audio.melspectrogram(audio.normalize_loudness(wav))
    return Tracks(path.stem, float(z["fps"]), v, gap, mel, wav, lag)


def video_tracks(path: Path, expert: SyncNetExpert, lag: int) -> Tracks:
    """A video with its own audio, tracked here as ``rtdub eval`` tracks it."""
    from rtdub.measure.scoring import _fill, _Track

    tr = _Track(expert.window.crop_size)
    try:
        fps = float(media.probe_video(path).fps)
        for fr in media.iter_frames(path):
            tr.add(fr.image, fr.time)
    finally:
        tr.tracker.close()
    crops = _fill(tr.crops, expert.window.crop_size)
    vw = expert.video_windows(crops)
    v = np.concatenate([expert.embed_video(vw[s : s + 64]) for s in range(0, len(vw), 64)])
    wav = media.load_audio(path)
    mel = audio.melspectrogram(audio.normalize_loudness(wav))
    return Tracks(path.stem, fps, v, np.asarray(tr.gap, np.float64), mel, wav, lag)


def read_lags(path: Path | None, min_shift: int = 2) -> dict[str, int]:
    if path is None or not path.is_file():
        return {}
    out = {}
    for r in json.loads(path.read_text()):
        if r.get("decided") and abs(int(r["shift"])) >= min_shift:
            out[str(r["clip"])] = int(r["shift"])
    return out


def _zrows(x: np.ndarray) -> np.ndarray:
    return np.stack([standardise(r) for r in x]) if len(x) else x


def _crows(x: np.ndarray) -> np.ndarray:
    return np.stack([centre(r) for r in x]) if len(x) else x


def _shift_rows(x: np.ndarray, bias: int) -> np.ndarray:
    return np.stack([unbiased(r, bias) for r in x]) if len(x) else x


@dataclass(frozen=True)
class Table:
    """Trials as arrays, for sweeping rules quickly (:func:`check` proves it agrees with
    rtdub.measure.phonesync.combine)."""

    identity: np.ndarray  # (T,) str
    truth: np.ndarray  # (T,) int
    expert: np.ndarray  # (T,) int
    neg_zd: np.ndarray  # (T, 31) −standardised expert distances
    neg_cd: np.ndarray  # (T, 31) −centred expert distances
    curves: np.ndarray  # (T, 31) audio-to-lip evidence
    phones: np.ndarray  # (T, 31) recognised phones' evidence (nan rows: none)

    @staticmethod
    def of(trials: list[Trial], phones: np.ndarray) -> Table:
        d = np.stack([t.distances for t in trials])
        return Table(
            np.asarray([t.identity for t in trials]),
            np.asarray([t.truth for t in trials], np.int64),
            VSHIFT - np.argmin(d, axis=1),
            -_zrows(d),
            -_crows(d),
            np.stack([t.curve for t in trials]),
            phones,
        )

    def rows(self, mask: np.ndarray) -> Table:
        return Table(
            self.identity[mask], self.truth[mask], self.expert[mask], self.neg_zd[mask], self.neg_cd[mask],
            self.curves[mask], self.phones[mask],
        )  # fmt: skip

    def source(self, which: str, bias: int) -> Source:
        return Source.of(_shift_rows(self.curves if which == "a2l" else self.phones, bias))

    def combined(self, rule: CombineRule, a: Source, p: Source) -> np.ndarray:
        """Combined offsets under ``rule`` (``a`` and ``p`` prepared with its biases)."""
        ua = a.usable(rule.min_confidence) & (rule.weight > 0)
        up = p.usable(rule.min_confidence) & (rule.phone_weight > 0)
        if rule.absolute:
            sc = self.neg_cd + rule.weight * a.c * ua[:, None] + rule.phone_weight * p.c * up[:, None]
        else:
            sc = self.neg_zd + rule.weight * a.z * ua[:, None] + rule.phone_weight * p.z * up[:, None]
        return np.where(ua | up, VSHIFT - np.argmax(sc, axis=1), self.expert)

    def hits(self, got: np.ndarray) -> np.ndarray:
        return np.abs(got - self.truth) <= 1

    def per_identity(self, ok: np.ndarray) -> float:
        """Mean over identities of the fraction within ±1 frame (long clips do not outvote short ones)."""
        return float(np.mean([ok[self.identity == i].mean() for i in sorted(set(self.identity))]))


@dataclass(frozen=True)
class Source:
    """One evidence's curves over trials, its bias removed."""

    z: np.ndarray  # (T, 31) standardised
    c: np.ndarray  # (T, 31) centred
    confidence: np.ndarray  # (T,)
    finite: np.ndarray  # (T,) entries that are finite
    offset: np.ndarray  # (T,) its own offset; 999 where it has none

    @staticmethod
    def of(c: np.ndarray) -> Source:
        fin = np.isfinite(c)
        conf = np.array([confidence(r) for r in c]) if len(c) else np.zeros(0)
        off = np.where(fin.any(axis=1), VSHIFT - np.argmax(np.where(fin, c, -np.inf), axis=1), 999)
        return Source(_zrows(c), _crows(c), conf, fin.sum(axis=1), off)

    def usable(self, min_confidence: float) -> np.ndarray:
        return (self.finite >= 3) & (np.nan_to_num(self.confidence, nan=-1.0) >= min_confidence)


def check(trials: list[Trial], table: Table, rule: CombineRule, n: int = 300) -> None:
    """The fast path gives the offsets of rtdub.measure.phonesync.combine (first n trials)."""
    a, p = table.source("a2l", rule.bias), table.source("phones", rule.phone_bias)
    comb = table.combined(rule, a, p)
    for k, t in enumerate(trials[:n]):
        ph = table.phones[k] if np.isfinite(table.phones[k]).any() else None
        c = combine(t.distances, t.curve, rule, ph)
        assert c.expert == table.expert[k] and c.combined == comb[k], (k, c.expert, c.combined, comb[k])


def pick_bias(table: Table, which: str) -> int:
    """An evidence's lag on the training identities: the median of its per-identity median errors."""
    src = table.source(which, 0)
    err = np.where(src.offset == 999, np.nan, src.offset - table.truth).astype(np.float64)
    meds = [np.nanmedian(err[table.identity == i]) for i in sorted(set(table.identity))
            if np.isfinite(err[table.identity == i]).any()]  # fmt: skip
    return int(np.round(np.median(meds))) if meds else 0


def pick(table: Table, sources: tuple[str, ...]) -> tuple[CombineRule, float]:
    """Each evidence's bias, then the weights with the most trials within ±1 frame (mean over
    identities); ties go to the larger weights, then the smaller min_confidence (the expert is
    at its best on its own training faces, so a tie says the evidence costs nothing there)."""
    bias = pick_bias(table, "a2l") if "a2l" in sources else 0
    pbias = pick_bias(table, "phones") if "phones" in sources else 0
    a, p = table.source("a2l", bias), table.source("phones", pbias)
    best: tuple[float, float, float, float, float] | None = None
    chosen = CombineRule(0.0, 0.0, bias, 0.0, pbias)
    for absolute, grid in ((False, WEIGHTS), (True, ABS_WEIGHTS)):
        for w in grid if "a2l" in sources else (0.0,):
            for pw in grid if "phones" in sources else (0.0,):
                for m in MIN_CONFIDENCE:
                    r = CombineRule(w, m, bias, pw, pbias, absolute)
                    acc = round(table.per_identity(table.hits(table.combined(r, a, p))), 6)
                    key = (acc, float(w + pw > 0), float(absolute), w + pw, -m)
                    if best is None or key > best:
                        best, chosen = key, r
    assert best is not None
    return chosen, best[0]


Refit = Callable[[str | None], Table]  # the training table with the class table fitted without an identity


def loio(refit: Refit, identities: list[str], sources: tuple[str, ...]) -> tuple[float, list[dict[str, object]]]:
    """Leave one identity out: the class table and the rule fitted on the others, scored on it."""
    rows: list[dict[str, object]] = []
    for i in identities:
        table = refit(i)
        r, _ = pick(table.rows(table.identity != i), sources)
        held = table.rows(table.identity == i)
        a, p = held.source("a2l", r.bias), held.source("phones", r.phone_bias)
        rows.append({"identity": i, "rule": asdict(r), "trials": len(held.truth),
                     "expert": float(held.hits(held.expert).mean()),
                     "combined": float(held.hits(held.combined(r, a, p)).mean())})  # fmt: skip
    return float(np.mean([float(r["combined"]) for r in rows])), rows  # type: ignore[arg-type]


def summary(table: Table, rule: CombineRule) -> dict[str, object]:
    a, p = table.source("a2l", rule.bias), table.source("phones", rule.phone_bias)
    comb = table.combined(rule, a, p)
    cols = {"expert": table.expert, "a2l evidence": a.offset, "phone evidence": p.offset, "combined": comb}
    per: dict[str, dict[str, object]] = {}
    for i in sorted(set(table.identity)):
        m = table.identity == i
        per[str(i)] = {"trials": int(m.sum()), **{k: float(table.hits(v)[m].mean()) for k, v in cols.items()}}
    return {
        "trials": len(table.truth),
        **{k: float(table.hits(v).mean()) for k, v in cols.items()},
        "per_identity": per,
    }


def identity_of(name: str, groups: dict[str, str]) -> str | None:
    return next((i for i, pat in groups.items() if fnmatch.fnmatch(name, pat)), None)


def host_load() -> str:
    try:
        la = os.getloadavg()
        return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


def fmt(x: object) -> str:
    return f"{100 * float(x):.1f} %" if isinstance(x, float) else str(x)


def report_md(res: dict[str, object], command: str) -> str:
    variants = res["variants"]
    assert isinstance(variants, dict)
    cols = ("expert", "a2l evidence", "phone evidence", "combined")
    first = next(iter(variants.values()), None)
    groups = list(first["groups"]) if first else []
    lines = [
        "# AV offset on shifted audio: the lip-sync expert, mouth-opening evidence, combined",
        "",
        f"`{command}`",
        "",
        f"Host: {res['host']}; {res['load_before']} before, {res['load_after']} after; {res['seconds']:.0f} s.",
        "",
        f"Protocol: segments of {res['segment_s']} s, audio delays −{res['max_delay']}…+{res['max_delay']} frames, "
        "search ±15 frames; a trial passes when the offset is within ±1 frame of −(clip lag + delay) "
        "(syncnet_python's sign). Clip lags (training.offset_check --asr, decided and ≥ 2 frames): "
        f"{res['lags']}. Class gap table (fitted on the real training identities {', '.join(REAL_TRAINING)}): "
        f"{res['class_gap']}.",
        "",
        "Each evidence set's rule is chosen on the training identities only; the set eval uses is the one with "
        "the best leave-one-identity-out (LOIO) score on them (class table and rule refitted without the "
        f"identity), if it beats the expert alone (LOIO {fmt(res['expert_loio'])}). Chosen: "
        f"**{res['chosen'] or 'the expert alone'}**.",
        "",
        "| evidence | rule | LOIO (training) | " + " | ".join(f"{g}: expert / combined" for g in groups) + " |",
        "|---|---|---|" + "---|" * len(groups),
    ]
    for name, v in variants.items():
        gs = v["groups"]
        lines.append(
            f"| {name} | {v['rule']} | {fmt(v['loio'])} | "
            + " | ".join(f"{fmt(gs[g]['expert'])} / {fmt(gs[g]['combined'])}" for g in groups)
            + " |"
        )
    for name, v in variants.items():
        lines += ["", f"## {name}: per identity", "", "| group | identity | trials | " + " | ".join(cols) + " |",
                  "|---|---|---|" + "---|" * len(cols)]  # fmt: skip
        for g, gs in v["groups"].items():
            lines.append(f"| {g} | all | {gs['trials']} | " + " | ".join(fmt(gs[c]) for c in cols) + " |")
            for i, pi in gs["per_identity"].items():
                lines.append(f"| {g} | {i} | {pi['trials']} | " + " | ".join(fmt(pi[c]) for c in cols) + " |")
        lines += ["", "Leave one training identity out:", "", "| identity | rule | trials | expert | combined |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in v["loio_rows"]:
            lines.append(
                f"| {r['identity']} | {r['rule']} | {r['trials']} | {fmt(r['expert'])} | {fmt(r['combined'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/train"))
    p.add_argument("--offsets", type=Path, default=Path("runs/offsets_train.json"))
    p.add_argument("--videos", type=Path, default=None, help="folder of the left-out identities' videos (*.mp4)")
    p.add_argument("--dev", type=Path, default=None, help="dev clips folder (*.mp4 with audio): score them once")
    p.add_argument("--model", default=None, help="bundle whose audio-to-lip model gives the evidence")
    p.add_argument("--segment", type=float, default=5.0, help="seconds per trial")
    p.add_argument("--max-delay", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--phones-cache", type=Path, default=None, help="recognised phones per clip (JSON) kept here")
    p.add_argument("--sources", choices=[*SOURCES, "all"], default="all", help="evidence sets to try")
    p.add_argument("--phone-mode", choices=("aligned", "loop"), default="aligned", help="PhoneRecogniser's mode")
    p.add_argument("--keep", type=Path, default=None, help="also pickle the trials here (for analysis)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    load_before = host_load()
    t0 = time.time()
    lags = read_lags(args.offsets)
    trials: list[Trial] = []
    tracks: list[tuple[Tracks, str]] = []
    expert = SyncNetExpert(threads=args.threads)
    gp = GapPredictor(args.model, threads=args.threads)
    rec = PhoneRecogniser(args.phone_mode) if args.sources != "a2l" else None
    phones: dict[str, ClipPhones] = {}
    pad = args.max_delay
    for path in sorted(args.data.glob("*.npz")):
        for group, pats in (("training", TRAINING), ("left out", LEFT_OUT), ("unreliable", UNRELIABLE)):
            ident = identity_of(path.stem, pats)
            if ident is None:
                continue
            tr = shard_tracks(path, expert, lags.get(path.stem, 0))
            trials += clip_trials(tr, group, ident, expert, gp, args.segment, args.max_delay)
            tracks.append((tr, ident))
            logger.info("%s (%s, %s): lag %d, %d trials so far", path.stem, group, ident, tr.lag, len(trials))
    if args.videos is not None:
        # the left-out identities again, tracked from their videos as rtdub eval tracks them
        for path in sorted(args.videos.glob("*.mp4")):
            ident = identity_of(path.stem, LEFT_OUT)
            if ident is not None:
                tr = video_tracks(path, expert, lags.get(path.stem, 0))
                tr = Tracks(tr.name + ".mp4", tr.fps, tr.video, tr.gap, tr.mel, tr.wav, tr.lag)
                trials += clip_trials(tr, "left out (videos)", ident, expert, gp, args.segment, args.max_delay)
                tracks.append((tr, ident))
                logger.info("%s (left out, video): lag %d, %d trials so far", path.stem, tr.lag, len(trials))
    if args.dev is not None:
        for path in sorted(args.dev.glob("*.mp4")):
            if _has_audio(path):
                tr = video_tracks(path, expert, 0)
                tr = Tracks("dev_" + tr.name, tr.fps, tr.video, tr.gap, tr.mel, tr.wav, tr.lag)
                trials += clip_trials(tr, "dev", path.stem, expert, gp, args.segment, args.max_delay)
                tracks.append((tr, path.stem))
                logger.info("%s (dev): %d trials so far", path.stem, len(trials))
    if rec is not None:
        for tr, ident in tracks:
            phones[tr.name] = clip_phones(tr, ident, pad, args.phones_cache, rec)
            logger.info("%s: phones recognised", tr.name)
    if args.keep is not None:
        import pickle

        args.keep.parent.mkdir(parents=True, exist_ok=True)
        args.keep.write_bytes(pickle.dumps((trials, phones)))
    groups_of = np.asarray([t.group for t in trials])
    is_train = groups_of == "training"
    fit_clips = [c for c in phones.values() if c.identity in REAL_TRAINING]
    fit_clips = [c for c in fit_clips if any(t.clip == c.name and t.group == "training" for t in trials)]
    train_trials = [t for t, m in zip(trials, is_train, strict=True) if m]

    def refit(without: str | None) -> Table:
        table = fit_class_gap([c for c in fit_clips if c.identity != without]) if phones else (0.0,) * N_CLASSES
        return Table.of(train_trials, phone_curves(train_trials, phones, table))

    class_gap = fit_class_gap(fit_clips) if phones else (0.0,) * N_CLASSES
    table = Table.of(trials, phone_curves(trials, phones, class_gap))
    train = table.rows(is_train)
    ids = sorted({t.identity for t in train_trials})
    order = ("training", "left out", "left out (videos)", "unreliable", "dev")
    names = [g for g in order if (groups_of == g).any()]
    # the expert alone, then each evidence set: its rule and its leave-one-identity-out score
    expert_loio = float(np.mean([train.hits(train.expert)[train.identity == i].mean() for i in ids]))
    variants: dict[str, dict[str, object]] = {}
    for name in [k for k in SOURCES if args.sources in ("all", k)]:
        if "phones" in SOURCES[name] and not phones:
            continue
        rule, acc = pick(train, SOURCES[name])
        check(trials, table, rule)
        loio_acc, loio_rows = loio(refit, ids, SOURCES[name])
        logger.info("%s: rule %s (training %.3f, LOIO %.3f)", name, rule, acc, loio_acc)
        variants[name] = {
            "sources": list(SOURCES[name]),
            "rule": asdict(rule),
            "training_accuracy": acc,
            "loio": loio_acc,
            "loio_rows": loio_rows,
            "groups": {g: summary(table.rows(groups_of == g), rule) for g in names},
        }
    # which evidence eval uses: the best LOIO, the expert alone unless an evidence beats it
    chosen = max(variants, key=lambda k: (float(variants[k]["loio"]), -len(SOURCES[k])), default=None)  # type: ignore[arg-type]
    if chosen is not None and float(variants[chosen]["loio"]) <= expert_loio:  # type: ignore[arg-type]
        chosen = None
    res: dict[str, object] = {
        "host": f"{platform.node() or 'host'}, {platform.machine()}, Python {platform.python_version()}",
        "load_before": load_before,
        "load_after": host_load(),
        "seconds": time.time() - t0,
        "segment_s": args.segment,
        "max_delay": args.max_delay,
        "lags": lags,
        "class_gap": [round(x, 4) for x in class_gap],
        "expert_loio": expert_loio,
        "chosen": chosen,
        "variants": variants,
    }
    command = "python -m benchmarks.av_offset " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.out / "av_offset.json", res)
    (args.out / "av_offset.md").write_text(report_md(res, command.strip()))
    for name, v in variants.items():
        for g, gs in v["groups"].items():  # type: ignore[attr-defined]
            logger.info(
                "%s / %s: %d trials, expert %.3f, a2l %.3f, phones %.3f, combined %.3f",
                name, g, gs["trials"], gs["expert"], gs["a2l evidence"], gs["phone evidence"], gs["combined"],
            )  # fmt: skip
    return 0


def _has_audio(path: Path) -> bool:
    try:
        return media.load_audio(path).size > 0
    except Exception:  # noqa: BLE001 - a clip without audio is skipped
        return False


if __name__ == "__main__":
    sys.exit(main())
