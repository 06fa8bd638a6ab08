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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdub import audio, media
from rtdub.face.lipunits import inner_gap_batch
from rtdub.measure.avsync import VSHIFT, SyncNetExpert, offset_distances
from rtdub.measure.phonesync import (
    DEFAULT_RULE,
    CombineRule,
    GapPredictor,
    combine,
    confidence,
    evidence_curve,
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
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
MIN_CONFIDENCE = (0.0, 0.05, 0.1, 0.15)


@dataclass(frozen=True)
class Tracks:
    """What a trial needs of one clip."""

    name: str
    fps: float
    video: np.ndarray  # (N - F + 1, E) expert video embeddings
    gap: np.ndarray  # (N,) tracked inner-lip gap (nan: no face)
    mel: np.ndarray  # whole-signal log-mel
    lag: int  # frames the clip's own audio lags its picture


@dataclass(frozen=True)
class Trial:
    group: str
    identity: str
    clip: str
    start: int
    delay: int
    truth: int
    distances: np.ndarray  # (31,)
    curve: np.ndarray  # (31,)


def clip_trials(
    t: Tracks, group: str, identity: str, expert: SyncNetExpert, gp: GapPredictor, segment_s: float, max_delay: int
) -> list[Trial]:
    """One trial per (segment, delay); the audio embedded and predicted once on a frame grid
    that reaches max_delay frames beyond both ends."""
    n = len(t.video)
    pad = max_delay
    grid = (np.arange(-pad, n + pad + len(t.gap) - n) / t.fps).astype(np.float64)
    aw = expert.audio_windows(t.mel, grid[: n + 2 * pad])
    a = np.concatenate([expert.embed_audio(aw[s : s + 128]) for s in range(0, len(aw), 128)])
    pred = gp.predict(t.mel, grid)
    seg = max(VSHIFT + 1, int(round(segment_s * t.fps)))
    out = []
    for s0 in range(0, max(1, n - seg + 1), seg):
        s1 = min(n, s0 + seg)
        for d in range(-max_delay, max_delay + 1):
            # audio read d frames late: frame i hears grid frame i - d (grid index i - d + pad)
            dist = offset_distances(t.video[s0:s1], a[s0 - d + pad : s1 - d + pad])
            cur = evidence_curve(t.gap[s0:s1], pred[s0 - d + pad : s1 - d + pad])
            out.append(Trial(group, identity, t.name, s0, d, -(t.lag + d), dist, cur))
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
    mel = audio.melspectrogram(audio.normalize_loudness(z["wav"]))
    return Tracks(path.stem, float(z["fps"]), v, gap, mel, lag)


def video_tracks(path: Path, expert: SyncNetExpert) -> Tracks:
    """A dev clip, tracked here as ``rtdub eval`` tracks it."""
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
    return Tracks(path.stem, fps, v, np.asarray(tr.gap, np.float64), mel, 0)


def read_lags(path: Path | None, min_shift: int = 2) -> dict[str, int]:
    if path is None or not path.is_file():
        return {}
    out = {}
    for r in json.loads(path.read_text()):
        if r.get("decided") and abs(int(r["shift"])) >= min_shift:
            out[str(r["clip"])] = int(r["shift"])
    return out


@dataclass(frozen=True)
class Table:
    """Trials as arrays, for sweeping rules quickly (:func:`check` proves it agrees with
    rtdub.measure.phonesync.combine)."""

    identity: np.ndarray  # (T,) str
    truth: np.ndarray  # (T,) int
    expert: np.ndarray  # (T,) int
    distances: np.ndarray  # (T, 31)
    curves: np.ndarray  # (T, 31)

    @staticmethod
    def of(trials: list[Trial]) -> Table:
        d = np.stack([t.distances for t in trials]) if trials else np.zeros((0, 2 * VSHIFT + 1))
        return Table(
            np.asarray([t.identity for t in trials]),
            np.asarray([t.truth for t in trials], np.int64),
            VSHIFT - np.argmin(d, axis=1) if trials else np.zeros(0, np.int64),
            d,
            np.stack([t.curve for t in trials]) if trials else np.zeros((0, 2 * VSHIFT + 1)),
        )

    def rows(self, mask: np.ndarray) -> Table:
        return Table(self.identity[mask], self.truth[mask], self.expert[mask], self.distances[mask], self.curves[mask])

    def offsets(self, rule: CombineRule) -> tuple[np.ndarray, np.ndarray]:
        """(evidence, combined) offsets per trial; evidence = 999 where it has none."""
        c = np.stack([unbiased(r, rule.bias) for r in self.curves]) if len(self.curves) else self.curves
        finite = np.isfinite(c)
        has = finite.any(axis=1)
        cz = np.where(finite, c, -np.inf)
        evidence = np.where(has, VSHIFT - np.argmax(cz, axis=1), 999)
        conf = np.array([confidence(r) for r in c]) if len(c) else np.zeros(0)
        usable = (finite.sum(axis=1) >= 3) & (conf >= rule.min_confidence)
        zd = np.stack([standardise(r) for r in self.distances]) if len(c) else c
        zc = np.stack([standardise(r) for r in c]) if len(c) else c
        comb = VSHIFT - np.argmax(-zd + rule.weight * zc, axis=1) if len(c) else np.zeros(0, np.int64)
        if rule.weight <= 0:
            usable[:] = False
        return evidence, np.where(usable, comb, self.expert)

    def evidence_error(self) -> np.ndarray:
        ev, _ = self.offsets(CombineRule(0.0))
        return np.where(ev == 999, np.nan, ev - self.truth).astype(np.float64)

    def within(self, rule: CombineRule | None, which: str = "combined") -> float:
        """Fraction of trials within ±1 frame: ``which`` is expert, evidence or combined."""
        if len(self.truth) == 0:
            return float("nan")
        if which == "expert":
            got = self.expert
        else:
            ev, comb = self.offsets(rule or DEFAULT_RULE)
            got = ev if which == "evidence" else comb
        return float(np.mean(np.abs(got - self.truth) <= 1))

    def per_identity(self, rule: CombineRule) -> float:
        """Mean over identities of the fraction within ±1 frame (long clips do not outvote short ones)."""
        return float(np.mean([self.rows(self.identity == i).within(rule) for i in sorted(set(self.identity))]))


def check(trials: list[Trial], table: Table, rule: CombineRule, n: int = 200) -> None:
    """The fast path gives the offsets of rtdub.measure.phonesync.combine (first n trials)."""
    ev, comb = table.offsets(rule)
    for k, t in enumerate(trials[:n]):
        c = combine(t.distances, t.curve, rule)
        assert c.expert == table.expert[k] and c.combined == comb[k], (k, c, comb[k])
        assert (c.evidence if c.evidence is not None else 999) == ev[k] or not np.isfinite(t.curve).any()


def pick_bias(table: Table) -> int:
    """The evidence's lag on training identities: the median of its per-identity median errors."""
    err = table.evidence_error()
    meds = [np.nanmedian(err[table.identity == i]) for i in sorted(set(table.identity))]
    return int(np.round(np.nanmedian(meds)))


def rules(bias: int) -> list[CombineRule]:
    return [CombineRule(w, m, bias) for w in WEIGHTS for m in MIN_CONFIDENCE if not (w == 0 and m > 0)]


def pick(table: Table) -> tuple[CombineRule, float]:
    """The evidence's bias, then the rule with the most trials within ±1 frame (mean over
    identities); ties go to the larger weight, then the smaller min_confidence (the expert is at
    its best on its own training faces, so a tie says the evidence costs nothing there)."""
    bias = pick_bias(table)
    best: tuple[float, float, float] | None = None
    chosen = DEFAULT_RULE
    for r in rules(bias):
        key = (round(table.per_identity(r), 6), r.weight, -r.min_confidence)
        if best is None or key > best:
            best, chosen = key, r
    assert best is not None
    return chosen, best[0]


def loio(table: Table) -> tuple[float, list[dict[str, object]]]:
    """Leave one identity out: the rule picked on the others, scored on it."""
    rows: list[dict[str, object]] = []
    for i in sorted(set(table.identity)):
        r, _ = pick(table.rows(table.identity != i))
        held = table.rows(table.identity == i)
        rows.append({"identity": i, "bias": r.bias, "weight": r.weight, "min_confidence": r.min_confidence,
                     "trials": len(held.truth), "expert": held.within(None, "expert"),
                     "combined": held.within(r)})  # fmt: skip
    return float(np.mean([float(r["combined"]) for r in rows])), rows  # type: ignore[arg-type]


def summary(table: Table, rule: CombineRule) -> dict[str, object]:
    per = {}
    for i in sorted(set(table.identity)):
        s = table.rows(table.identity == i)
        err = s.evidence_error()
        per[str(i)] = {
            "trials": len(s.truth),
            "expert": s.within(None, "expert"),
            "evidence": s.within(rule, "evidence"),
            "combined": s.within(rule),
            "evidence_median_error": float(np.nanmedian(err)) if np.isfinite(err).any() else None,
        }
    return {
        "trials": len(table.truth),
        "expert": table.within(None, "expert"),
        "evidence": table.within(rule, "evidence"),
        "combined": table.within(rule),
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
    rule = res["rule"]
    assert isinstance(rule, dict)
    lines = [
        "# AV offset on shifted audio: expert, mouth-opening evidence, combined",
        "",
        f"`{command}`",
        "",
        f"Host: {res['host']}; {res['load_before']} before, {res['load_after']} after; {res['seconds']:.0f} s.",
        "",
        f"Protocol: segments of {res['segment_s']} s, audio delays −{res['max_delay']}…+{res['max_delay']} frames, "
        "search ±15 frames; a trial passes when the offset is within ±1 frame of −(clip lag + delay) "
        "(syncnet_python's sign). Clip lags (training.offset_check --asr, decided and ≥ 2 frames): "
        f"{res['lags']}.",
        "",
        f"Combination rule (chosen on the training identities only): evidence bias {rule['bias']} frames, "
        f"weight {rule['weight']}, "
        f"min_confidence {rule['min_confidence']}. Leave-one-identity-out on the training identities: "
        f"{fmt(res['loio'])}.",
        "",
        "| identities | trials | expert only | evidence only | combined |",
        "|---|---|---|---|---|",
    ]
    groups = res["groups"]
    assert isinstance(groups, dict)
    for g, s in groups.items():
        lines.append(f"| {g} | {s['trials']} | {fmt(s['expert'])} | {fmt(s['evidence'])} | {fmt(s['combined'])} |")
    lines += ["", "Per identity:", "", "| group | identity | trials | expert | evidence | combined |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for g, s in groups.items():
        for i, p in s["per_identity"].items():
            lines.append(
                f"| {g} | {i} | {p['trials']} | {fmt(p['expert'])} | {fmt(p['evidence'])} | {fmt(p['combined'])} |"
            )
    lines += ["", "Leave one training identity out (rule picked on the others):", "",
              "| identity | bias | weight | min_confidence | trials | expert | combined |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = res["loio_rows"]
    assert isinstance(rows, list)
    for r in rows:
        lines.append(
            f"| {r['identity']} | {r['bias']} | {r['weight']} | {r['min_confidence']} | {r['trials']} | "
            f"{fmt(r['expert'])} | {fmt(r['combined'])} |"
        )
    sweep = res["sweep"]
    assert isinstance(sweep, list)
    lines += ["", "Weight sweep (min_confidence 0; every group, for the record: the rule was not chosen here):", "",
              "| weight | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]  # fmt: skip
    for row in sweep:
        lines.append(f"| {row['weight']} | " + " | ".join(fmt(row[g]) for g in groups) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/train"))
    p.add_argument("--offsets", type=Path, default=Path("runs/offsets_train.json"))
    p.add_argument("--dev", type=Path, default=None, help="dev clips folder (*.mp4 with audio): score them once")
    p.add_argument("--model", default=None, help="bundle whose audio-to-lip model gives the evidence")
    p.add_argument("--segment", type=float, default=5.0, help="seconds per trial")
    p.add_argument("--max-delay", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--cache", type=Path, default=None, help="save/load the trials' curves here (npz)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    load_before = host_load()
    t0 = time.time()
    lags = read_lags(args.offsets)
    trials: list[Trial] = []
    if args.cache is not None and args.cache.is_file():
        trials = load_trials(args.cache)
    else:
        expert = SyncNetExpert(threads=args.threads)
        gp = GapPredictor(args.model, threads=args.threads)
        for path in sorted(args.data.glob("*.npz")):
            for group, pats in (("training", TRAINING), ("left out", LEFT_OUT), ("unreliable", UNRELIABLE)):
                ident = identity_of(path.stem, pats)
                if ident is None:
                    continue
                tr = shard_tracks(path, expert, lags.get(path.stem, 0))
                trials += clip_trials(tr, group, ident, expert, gp, args.segment, args.max_delay)
                logger.info("%s (%s, %s): lag %d, %d trials so far", path.stem, group, ident, tr.lag, len(trials))
        if args.dev is not None:
            for path in sorted(args.dev.glob("*.mp4")):
                if media.probe_video(path).fps and _has_audio(path):
                    tr = video_tracks(path, expert)
                    trials += clip_trials(tr, "dev", path.stem, expert, gp, args.segment, args.max_delay)
                    logger.info("%s (dev): %d trials so far", path.stem, len(trials))
        if args.cache is not None:
            save_trials(args.cache, trials)
    table = Table.of(trials)
    groups_of = np.asarray([t.group for t in trials])
    train = table.rows(groups_of == "training")
    rule, acc = pick(train)
    check(trials, table, rule)
    logger.info("rule on the training identities: bias %d, weight %.2f, min_confidence %.2f (%.3f)", rule.bias,
                rule.weight, rule.min_confidence, acc)  # fmt: skip
    loio_acc, loio_rows = loio(train)
    names = [g for g in ("training", "left out", "unreliable", "dev") if (groups_of == g).any()]
    groups = {g: summary(table.rows(groups_of == g), rule) for g in names}
    sweep = [
        {"weight": w, **{g: table.rows(groups_of == g).within(CombineRule(w, 0.0, rule.bias)) for g in names}}
        for w in WEIGHTS
    ]
    res: dict[str, object] = {
        "host": f"{platform.node() or 'host'}, {platform.machine()}, Python {platform.python_version()}",
        "load_before": load_before,
        "load_after": host_load(),
        "seconds": time.time() - t0,
        "segment_s": args.segment,
        "max_delay": args.max_delay,
        "lags": lags,
        "rule": {"bias": rule.bias, "weight": rule.weight, "min_confidence": rule.min_confidence},
        "training_accuracy": acc,
        "loio": loio_acc,
        "loio_rows": loio_rows,
        "groups": groups,
        "sweep": sweep,
    }
    command = "python -m benchmarks.av_offset " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.out / "av_offset.json", res)
    (args.out / "av_offset.md").write_text(report_md(res, command.strip()))
    for g, s in groups.items():
        logger.info("%s: %d trials, expert %.3f, evidence %.3f, combined %.3f", g, s["trials"], s["expert"],
                    s["evidence"], s["combined"])  # fmt: skip
    return 0


def _has_audio(path: Path) -> bool:
    try:
        return media.load_audio(path).size > 0
    except Exception:  # noqa: BLE001 - a clip without audio is skipped
        return False


def save_trials(path: Path, trials: list[Trial]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = [[t.group, t.identity, t.clip, t.start, t.delay, t.truth] for t in trials]
    np.savez(
        path,
        meta=np.asarray(json.dumps(meta)),
        distances=np.stack([t.distances for t in trials]),
        curves=np.stack([t.curve for t in trials]),
    )


def load_trials(path: Path) -> list[Trial]:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    return [
        Trial(str(g), str(i), str(c), int(s), int(d), int(tr), z["distances"][k], z["curves"][k])
        for k, (g, i, c, s, d, tr) in enumerate(meta)
    ]


if __name__ == "__main__":
    sys.exit(main())
