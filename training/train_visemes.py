"""The fused audio drive: today's audio-to-lip model plus a speaker-independent viseme recogniser.

    python -m training.pretrain_a2l --task phones --tts data/tts --tts data/asr_gen --out runs/recog/pre_phones
    python -m training.train_visemes --recogniser runs/recog/pre_phones --data data/train \
        --basis engines/default --offsets runs/offsets_train.json --out runs/visemes \
        [--loo-bundles runs/visemes/loo]

The recogniser (training.pretrain_a2l ``--task phones``) classifies the same mel window the
audio-to-lip model sees into the visual classes of rtdub/drive/phones.py. It is trained on
espeak-ng voices (training.tts_data: languages, pitches, rates, rooms, noise, codecs) and on the
audio of other generators' clips labelled by pocketsphinx, never on the real identities this
script fits and scores, so every real identity is a new voice to it.

Here its class log-probabilities at the frame are mapped to the bundle's lip units by ridge
regression on the real clips (their true units, shifted by each clip's measured audio lag),
leaving one identity out to choose the ridge strength and to score. The fused drive is

    units = (1 - w) * audio_to_lip(mel) + w * (centre + gain * (map(log p(class | mel)) - centre))

with ``w`` fixed at ``--weight`` (0.5: equal weights, chosen before scoring; the default
audio-to-lip model was trained on three of the real identities, so no leave-one-out over them
can choose ``w`` fairly; the report lists every ``w`` of a grid for information only). ``gain``
gives the map's output the spread of real units (least squares on a weak signal shrinks it).

Written to OUT: ``a2l_fused.onnx`` (one graph: both models, the map and the mix, with the input
and output of a2l.onnx, so every backend runs it unchanged), ``report.json`` (per identity, the
unit-level mouth-opening correlation, MOC, of the default drive, the recogniser alone and the
fused drive, each as the runtime computes it: window, lookahead, silence and smoothing) and, with
``--loo-bundles``, one bundle per real identity whose map never saw that identity (for rendered
evaluations on held-out people: benchmarks/audio_drive.py).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engines.onnx_export import load_a2l

from .data import apply_audio_offsets, attach_units, identity, load_basis, load_dir, offset_records
from .visemes import (
    ALPHAS,
    EXCLUDE,
    WEIGHT_GRID,
    Sample,
    class_logp,
    export_fused,
    fit_maps,
    mapped,
    moc,
    runtime_units,
    write_bundle,
)

logger = logging.getLogger("training.train_visemes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fit the viseme recogniser's map and export the fused audio drive")
    p.add_argument(
        "--recogniser",
        type=Path,
        action="append",
        required=True,
        help="a training.pretrain_a2l --task phones run (repeat: an ensemble of their mapped units)",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared real clips (training.prepare)")
    p.add_argument("--basis", type=Path, required=True, help="the bundle whose audio drive is fused")
    p.add_argument("--offsets", type=Path, default=None, help="training.offset_check --json readings")
    p.add_argument("--offset-min", type=int, default=2)
    p.add_argument("--exclude", action="append", default=[], help="clips left out of everything (glob)")
    p.add_argument("--weight", type=float, default=0.5, help="the recogniser's share of the fused units")
    p.add_argument("--lookahead-ms", type=float, default=40.0)
    p.add_argument("--max-gain", type=float, default=3.0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--loo-bundles", type=Path, default=None, help="also write one bundle per left-out identity")
    p.add_argument("--bundle", type=Path, default=None, help="also write the fused bundle (a copy of --basis)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not 0.0 <= args.weight <= 1.0:
        print("train_visemes: error: --weight must be in [0, 1]", file=sys.stderr)
        return 2
    t0 = time.time()
    torch.set_num_threads(1)
    metas = []
    for run in args.recogniser:
        meta = json.loads((run / "meta.json").read_text())
        if meta.get("task") != "phones" or meta.get("classes") is None:
            print(f"train_visemes: error: {run}: not a phones run of training.pretrain_a2l", file=sys.stderr)
            return 2
        metas.append(meta)
    recs = [load_a2l(run) for run in args.recogniser]
    excl = list(EXCLUDE) + args.exclude
    clips = [
        c for c in load_dir(args.data) if c.real and c.has_audio and not any(fnmatch.fnmatch(c.name, g) for g in excl)
    ]
    attach_units(clips, load_basis(args.basis))
    lags = {}
    if args.offsets is not None:
        lags = apply_audio_offsets(clips, offset_records(json.loads(args.offsets.read_text())), args.offset_min)
    la = args.lookahead_ms / 1000
    samples = []
    for c in clips:
        assert c.units is not None
        t = c.times[c.valid]
        logp = [class_logp(r, c, t, la, r.cfg.window) for r in recs]
        samples.append(Sample(c, identity(c.name), t, c.units[c.valid], logp))
    idents = sorted({s.ident for s in samples})
    logger.info("%d clips, %d identities, lags %s", len(samples), len(idents), lags)

    # the ridge strength: leave one identity out, the recogniser's map alone
    def loo(alpha: float) -> dict[str, float]:
        out = {}
        for ident in idents:
            fits = fit_maps([s for s in samples if s.ident != ident], alpha, args.max_gain)
            test = [s for s in samples if s.ident == ident]
            out[ident] = moc([mapped(s, fits) for s in test], [s.units for s in test])
        return out

    grid = {a: loo(a) for a in ALPHAS}
    alpha = max(ALPHAS, key=lambda a: float(np.nanmean(list(grid[a].values()))))
    logger.info(
        "ridge alpha %g (LOO MOC of the map alone %s)",
        alpha,
        {a: round(float(np.nanmean(list(v.values()))), 3) for a, v in grid.items()},
    )

    args.out.mkdir(parents=True, exist_ok=True)
    base_units = {s.clip.name: runtime_units(args.basis, s, args.lookahead_ms, "base") for s in samples}
    per: dict[str, dict[str, object]] = {}
    folds = args.out / "folds"
    for ident in idents:
        train = [s for s in samples if s.ident != ident]
        test = [s for s in samples if s.ident == ident]
        fits = fit_maps(train, alpha, args.max_gain)
        rec_only = [mapped(s, fits) for s in test]  # the maps' units, unsmoothed
        row: dict[str, object] = {
            "frames": int(sum(len(s.times) for s in test)),
            "default": moc([base_units[s.clip.name] for s in test], [s.units for s in test]),
            "recogniser": moc(rec_only, [s.units for s in test]),
            "mix_grid": {
                str(w): moc(
                    [(1 - w) * base_units[s.clip.name] + w * r for s, r in zip(test, rec_only, strict=True)],
                    [s.units for s in test],
                )
                for w in WEIGHT_GRID
            },
        }
        fused = folds / f"{ident}.onnx"
        folds.mkdir(exist_ok=True)
        err = export_fused(recs, fits, args.basis, args.weight, fused)
        info = {"weight": args.weight, "alpha": alpha, "left_out": ident, "parity_max_abs": err}
        if args.loo_bundles is not None:
            write_bundle(args.basis, fused, args.loo_bundles / ident, info)
            row["fused"] = moc(
                [runtime_units(args.loo_bundles / ident, s, args.lookahead_ms) for s in test], [s.units for s in test]
            )
        per[ident] = row
        logger.info("%s: %s", ident, row)
    shutil.rmtree(folds, ignore_errors=True)

    fits = fit_maps(samples, alpha, args.max_gain)
    err = export_fused(recs, fits, args.basis, args.weight, args.out / "a2l_fused.onnx")
    info = {
        "weight": args.weight,
        "alpha": alpha,
        "recognisers": [str(r) for r in args.recogniser],
        "recogniser_steps": [m.get("step") for m in metas],
        "recogniser_held_out_tts": [m.get("eval") for m in metas],
        "map_trained_on": sorted(s.clip.name for s in samples),
        "audio_lags_s": lags,
        "parity_max_abs": err,
        "trained": "training.train_visemes",
    }
    report = {
        "info": info,
        "alpha_grid": {str(a): v for a, v in grid.items()},
        "identities": per,
        "wall_s": time.time() - t0,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "fused.json").write_text(json.dumps(info, indent=1) + "\n")
    if args.bundle is not None:
        write_bundle(args.basis, args.out / "a2l_fused.onnx", args.bundle, info)
    print(f"alpha {alpha:g}, weight {args.weight:g}, parity {err:.2e}")
    for ident, row in per.items():
        print(
            f"  {ident:14s} default {row['default']:.3f}  recogniser {row['recogniser']:.3f}"
            f"  fused {row.get('fused', float('nan')):.3f}"
        )
    print(f"wrote {args.out / 'a2l_fused.onnx'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
