"""Train the phonetic drive (rtdub/drive/phonetic.py): timed visual phoneme classes -> lip units.

    python -m training.train_phonetic --data data/train --asr data/asr --basis engines/default \
        --offsets runs/offsets_train.json --out runs/phonetic

Data: the prepared real clips (training.prepare: landmarks -> the bundle's z-scored units per
frame) and their recognised phones (training.asr_phones: pocketsphinx, one espeak mnemonic per
10 ms), shifted by each clip's measured audio lag (training.offset_check --json; |lag| >= 2
frames, as train_sync applies them). Generated clips (other generators' output) may be added
to training with --generated, never to the evaluation.

Every setting (window, bin, loudness, ridge strength) is chosen by leaving one identity out:
each real identity is predicted by a model trained on all the others, and the setting with the
best mean correlation of the mouth opening (the gap unit, the unit-level MOC) over identities
wins. The final model is fitted on every clip and written to OUT/phonetic.json with a report
(OUT/report.json: per-identity figures of the chosen setting, the grid, and the audio drive of
--basis on the same frames as the baseline).
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rtdub.drive.events import PhoneTimeline
from rtdub.drive.phones import BILABIAL, OPEN
from rtdub.drive.phonetic import PhoneticConfig, PhoneticModel, features, fit_ridge, loudness_db
from rtdub.model import load_bundle

from .common import articulation, corr
from .data import Clip, apply_audio_offsets, attach_units, identity, load_basis, load_dir, offset_records
from .phones import asr_timeline, load_shards

logger = logging.getLogger("training.train_phonetic")
GAP = -1  # the inner-gap unit is the last one


@dataclass
class Sample:
    clip: str
    ident: str
    real: bool
    timeline: PhoneTimeline
    times: np.ndarray  # valid frames' times
    units: np.ndarray  # (N, U) z-scored true units
    loud: np.ndarray  # (N,) dB under the clip's loud level
    audio_units: np.ndarray | None = None  # the audio drive's units on the same frames


def build_samples(clips: list[Clip], shards: dict[str, tuple[np.ndarray, list[str]]]) -> list[Sample]:
    out = []
    for c in clips:
        if c.name not in shards or c.units is None or not c.valid.any():
            continue
        phone, symbols = shards[c.name]
        tl = asr_timeline(phone, symbols, c.audio_lag)
        t = c.times[c.valid]
        loud = loudness_db(c.wav, 16000, t + c.audio_lag)
        out.append(Sample(c.name, identity(c.name), c.real, tl, t, c.units[c.valid], loud))
    return out


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(a random open-vowel frame's gap > a random bilabial frame's gap)."""
    if not len(neg) or not len(pos):
        return float("nan")
    both = np.concatenate([neg, pos])
    ranks = np.argsort(np.argsort(both)) + 1.0
    return float((ranks[: len(neg)].sum() - len(neg) * (len(neg) + 1) / 2) / (len(neg) * len(pos)))


def scores(pred: np.ndarray, s: Sample) -> dict[str, float]:
    at = s.timeline.occupancy(0.0, 1.0 / 80, int(s.times.max() * 80) + 2)
    idx = np.clip((s.times * 80).astype(int), 0, len(at) - 1)
    bil, opn = at[idx, BILABIAL] > 0.5, at[idx, OPEN] > 0.5
    return {
        "moc": corr(pred[:, GAP], s.units[:, GAP]),
        "unit_corr": float(np.nanmean([corr(pred[:, k], s.units[:, k]) for k in range(s.units.shape[1])])),
        "closure_auc": auc(pred[opn, GAP], pred[bil, GAP]),
        "frames": float(len(s.times)),
    }


@dataclass(frozen=True)
class Trial:
    config: PhoneticConfig
    alpha: float
    moc: float  # mean over identities left out
    identities: dict[str, dict[str, float]]

    def summary(self) -> dict[str, object]:
        return {"config": asdict(self.config), "alpha": self.alpha, "moc": self.moc}


def design(samples: list[Sample], cfg: PhoneticConfig) -> list[np.ndarray]:
    return [features(s.timeline, s.times, cfg, s.loud) for s in samples]


def leave_one_out(samples: list[Sample], feats: list[np.ndarray], alpha: float) -> dict[str, dict[str, float]]:
    idents = sorted({s.ident for s in samples if s.real})
    out: dict[str, dict[str, float]] = {}
    for ident in idents:
        train = [i for i, s in enumerate(samples) if s.ident != ident]
        test = [i for i, s in enumerate(samples) if s.ident == ident]
        x = np.concatenate([feats[i] for i in train])
        w = fit_ridge(x, np.concatenate([samples[i].units for i in train]), alpha)
        pred = np.concatenate([feats[i] @ w for i in test])
        merged = Sample(
            ident, ident, True, samples[test[0]].timeline,
            np.concatenate([samples[i].times for i in test]),
            np.concatenate([samples[i].units for i in test]),
            np.concatenate([samples[i].loud for i in test]),
        )  # fmt: skip
        per = [scores(feats[i] @ w, samples[i]) for i in test]
        out[ident] = {
            "moc": corr(pred[:, GAP], merged.units[:, GAP]),
            "unit_corr": float(np.nanmean([p["unit_corr"] for p in per])),
            "closure_auc": float(np.nanmean([p["closure_auc"] for p in per])),
            "frames": float(sum(p["frames"] for p in per)),
        }
    return out


def audio_baseline(samples: list[Sample], bundle_dir: Path, lookahead_ms: float, clips: dict[str, Clip]) -> None:
    """The bundle's audio drive on each sample's frames (what the default dubs with today)."""
    from rtdub.audio import StaticMel
    from rtdub.backends import get_backend
    from rtdub.drive.audio import AudioDriveConfig, AudioStage
    from rtdub.model import load_bundle

    bundle = load_bundle(bundle_dir)
    backend = get_backend("onnx", bundle)
    for s in samples:
        c = clips[s.clip]
        stage = AudioStage(bundle, backend, AudioDriveConfig(lookahead_ms=lookahead_ms))
        mel = StaticMel(c.mel)
        units = np.zeros((len(c.times), bundle.n_units), np.float32)
        for i, t in enumerate(c.times):
            units[i] = stage.units_at(mel, float(t) + c.audio_lag)[0]
        s.audio_units = units[c.valid]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="train the phonetic drive (classes -> lip units)")
    p.add_argument("--data", type=Path, required=True, help="prepared real clips (training.prepare)")
    p.add_argument("--asr", type=Path, required=True, help="their phones (training.asr_phones)")
    p.add_argument("--basis", type=Path, required=True, help="the bundle whose lip units to predict")
    p.add_argument("--offsets", type=Path, default=None, help="training.offset_check --json readings")
    p.add_argument("--offset-min", type=int, default=2, help="smallest |offset| (frames) applied")
    p.add_argument("--exclude", action="append", default=[], help="clips left out of everything (glob)")
    p.add_argument("--generated", action="store_true", help="also train on generated_* clips")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lookahead-ms", type=float, default=40.0, help="the audio baseline's lookahead")
    p.add_argument("--max-gain", type=float, default=3.0, help="cap of the articulation gain per unit")
    p.add_argument("--closure", type=float, default=0.0, help="bilabial closure rule (0: the learned map alone)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for d in (args.data, args.asr):
        if not d.is_dir():
            print(f"train_phonetic: error: {d}: not a directory", file=sys.stderr)
            return 2
    t0 = time.time()
    clips = [c for c in load_dir(args.data) if not any(fnmatch.fnmatch(c.name, g) for g in args.exclude)]
    if not args.generated:
        clips = [c for c in clips if c.real]
    attach_units(clips, load_basis(args.basis))
    lags: dict[str, float] = {}
    if args.offsets is not None:
        lags = apply_audio_offsets(clips, offset_records(json.loads(args.offsets.read_text())), args.offset_min)
    shards = {s.name.removeprefix("asr_"): (s.phone, s.symbols) for s in load_shards(args.asr)}
    samples = build_samples(clips, shards)
    logger.info("%d clips, %d identities, lags %s", len(samples), len({s.ident for s in samples}), lags)

    grid = [
        PhoneticConfig(bin_s=b, past_s=pa, future_s=fu, loudness=ld)
        for b, pa, fu, ld in itertools.product((0.02, 0.04), (0.12, 0.2, 0.3), (0.04, 0.1, 0.16), (False, True))
    ]
    alphas = (1.0, 10.0, 100.0)
    results: list[Trial] = []
    for cfg in grid:
        feats = design(samples, cfg)
        for a in alphas:
            loo = leave_one_out(samples, feats, a)
            trial = Trial(cfg, a, float(np.nanmean([v["moc"] for v in loo.values()])), loo)
            results.append(trial)
            logger.info("%s alpha %g: LOO MOC %.3f", asdict(cfg), a, trial.moc)
    best = max(results, key=lambda r: r.moc)
    cfg, alpha = best.config, best.alpha
    feats = design(samples, cfg)
    x, y = np.concatenate(feats), np.concatenate([s.units for s in samples])
    w = fit_ridge(x, y, alpha)
    gain, centre = articulation(x @ w, y, args.max_gain)
    logger.info("articulation gain %s", np.round(gain, 2).tolist())

    by_name = {c.name: c for c in clips}
    audio_baseline(samples, args.basis, args.lookahead_ms, by_name)
    baseline: dict[str, dict[str, float]] = {}
    for ident in sorted({s.ident for s in samples if s.real}):
        ss = [s for s in samples if s.ident == ident]
        au = np.concatenate([s.audio_units for s in ss if s.audio_units is not None])
        tr = np.concatenate([s.units for s in ss])
        baseline[ident] = {"moc": corr(au[:, GAP], tr[:, GAP])}
    info = {
        "trained_on": sorted(s.clip for s in samples),
        "identities": sorted({s.ident for s in samples}),
        "alpha": alpha,
        "loo_moc": best.moc,
        "gain": np.round(gain, 3).tolist(),
        "audio_lags_s": lags,
        "labels": "pocketsphinx en-us phones (training.asr_phones), espeak classes",
        "basis": str(args.basis),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    closed = load_bundle(args.basis).closed_units
    info["closure"] = args.closure
    PhoneticModel(cfg, w, info, gain, centre, args.closure, closed).save(args.out / "phonetic.json")
    report = {
        "chosen": {**best.summary(), "identities": best.identities},
        "audio_drive_baseline": baseline,
        "grid": [r.summary() for r in results],
        "wall_s": time.time() - t0,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"chosen {asdict(cfg)} alpha {alpha:g}: leave-one-identity-out MOC {best.moc:.3f}")
    for ident, v in best.identities.items():
        print(
            f"  {ident:14s} phonetic MOC {v['moc']:.3f} closure AUC {v['closure_auc']:.3f}"
            f"   audio drive MOC {baseline[ident]['moc']:.3f}"
        )
    print(f"wrote {args.out / 'phonetic.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
