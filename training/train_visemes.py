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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from engines.onnx_export import OPSET, load_a2l
from rtdub import audio
from rtdub.audio import StaticMel
from rtdub.backends import get_backend
from rtdub.drive.audio import AudioDriveConfig, AudioStage
from rtdub.drive.phones import N_CLASSES
from rtdub.drive.phonetic import fit_ridge
from rtdub.model import load_bundle

from .data import Clip, apply_audio_offsets, attach_units, load_basis, load_dir, offset_records
from .train_phonetic import corr, identity

logger = logging.getLogger("training.train_visemes")
GAP = -1  # the inner-gap unit
ALPHAS = (1.0, 10.0, 100.0, 1000.0)
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
EXCLUDE = ("*noaudio*",)


@dataclass
class Sample:
    clip: Clip
    ident: str
    times: np.ndarray  # valid frames' times (picture clock)
    units: np.ndarray  # (N, U) true z-units
    logp: list[np.ndarray]  # per recogniser, (N, C) class log-probabilities at those frames


Fitted = tuple[np.ndarray, np.ndarray, np.ndarray]  # a map's weights (C + 1, U), gain (U,), centre (U,)


class VisemeMap(torch.nn.Module):
    """mel (B, W, 80), lookahead (B, 1) -> units (B, U): the recogniser's class
    log-probabilities through the fitted affine map and the articulation gain."""

    def __init__(self, recogniser: torch.nn.Module, weights: np.ndarray, gain: np.ndarray, centre: np.ndarray) -> None:
        super().__init__()
        self.rec = recogniser
        self.w: torch.Tensor
        self.b: torch.Tensor
        self.gain: torch.Tensor
        self.centre: torch.Tensor
        self.register_buffer("w", torch.from_numpy(np.asarray(weights[:-1], np.float32)))
        self.register_buffer("b", torch.from_numpy(np.asarray(weights[-1], np.float32)))
        self.register_buffer("gain", torch.from_numpy(np.asarray(gain, np.float32)))
        self.register_buffer("centre", torch.from_numpy(np.asarray(centre, np.float32)))

    def forward(self, mel: torch.Tensor, lookahead: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.rec(mel, lookahead)[:, :N_CLASSES], dim=1)
        y = logp @ self.w + self.b
        return self.centre + self.gain * (y - self.centre)


class VisemeEnsemble(torch.nn.Module):
    """The mean of several recognisers' mapped units (seeds: less variance than any one)."""

    def __init__(self, recognisers: Sequence[torch.nn.Module], fits: Sequence[Fitted]) -> None:
        super().__init__()
        self.maps = torch.nn.ModuleList(VisemeMap(r, *f) for r, f in zip(recognisers, fits, strict=True))

    def forward(self, mel: torch.Tensor, lookahead: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(mel, lookahead) for m in self.maps]).mean(0)


def class_logp(rec: torch.nn.Module, clip: Clip, times: np.ndarray, lookahead: float, window: int) -> np.ndarray:
    """(N, C) log-probabilities of the visual classes for frames shown at ``times``."""
    ts = times + clip.audio_lag
    w = np.stack([audio.mel_window(clip.mel, float(t), lookahead, window) for t in ts]).astype(np.float32)
    with torch.no_grad():
        lg = rec(torch.from_numpy(w), torch.full((len(w), 1), lookahead))[:, :N_CLASSES]
        return torch.log_softmax(lg, 1).numpy()


def design(logp: np.ndarray) -> np.ndarray:
    return np.concatenate([logp, np.ones((len(logp), 1), np.float32)], 1)


def articulation(pred: np.ndarray, truth: np.ndarray, max_gain: float) -> tuple[np.ndarray, np.ndarray]:
    centre = pred.mean(0)
    gain = np.clip(truth.std(0) / np.maximum(pred.std(0), 1e-6), 1.0, max_gain)
    return gain.astype(np.float32), centre.astype(np.float32)


def fit_map(samples: list[Sample], alpha: float, max_gain: float, k: int = 0) -> Fitted:
    """The ridge map of recogniser ``k``'s log-probabilities to the units, with its gain."""
    x = np.concatenate([design(s.logp[k]) for s in samples])
    y = np.concatenate([s.units for s in samples])
    w = fit_ridge(x, y, alpha)
    gain, centre = articulation(x @ w, y, max_gain)
    return w, gain, centre


def fit_maps(samples: list[Sample], alpha: float, max_gain: float) -> list[Fitted]:
    return [fit_map(samples, alpha, max_gain, k) for k in range(len(samples[0].logp))]


def mapped(s: Sample, fits: list[Fitted]) -> np.ndarray:
    """The sample's units from the recognisers' maps, averaged (unsmoothed)."""
    return np.mean([c + g * (design(lp) @ w - c) for lp, (w, g, c) in zip(s.logp, fits, strict=True)], axis=0)


def fused_onnx(base: Path, part: Path, weight: float, out: Path) -> None:
    """One graph: ``base`` (a2l.onnx) and ``part`` (the exported VisemeMap, same inputs),
    mixed as (1 - weight) * base + weight * part, under base's input and output names."""
    a, b = onnx.load(str(base)), onnx.load(str(part))
    ins = [i.name for i in a.graph.input]
    out_name = a.graph.output[0].name
    b = onnx.compose.add_prefix(b, "rec/", rename_inputs=False, rename_outputs=True)
    if [i.name for i in b.graph.input] != ins:
        raise ValueError(f"input names differ: {ins} vs {[i.name for i in b.graph.input]}")
    g = a.graph
    a_out = "a2l/" + out_name
    for n in g.node:
        n.output[:] = [a_out if o == out_name else o for o in n.output]
    g.node.extend(b.graph.node)
    g.initializer.extend(b.graph.initializer)
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(1.0 - weight, np.float32), "mix/base_weight"),
            numpy_helper.from_array(np.array(weight, np.float32), "mix/rec_weight"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Mul", [a_out, "mix/base_weight"], ["mix/base"]),
            helper.make_node("Mul", [b.graph.output[0].name, "mix/rec_weight"], ["mix/rec"]),
            helper.make_node("Add", ["mix/base", "mix/rec"], [out_name]),
        ]
    )
    onnx.checker.check_model(a, full_check=True)
    tmp = out.with_name(out.name + ".part")
    onnx.save(a, str(tmp))
    tmp.replace(out)


def export_fused(
    recs: Sequence[torch.nn.Module], fits: Sequence[Fitted], basis: Path, weight: float, out: Path
) -> float:
    """Write ``out`` (the fused graph) and return its max abs difference from torch + the
    base graph on random inputs."""
    import onnxruntime as ort

    m = VisemeEnsemble(recs, fits).eval()
    bundle = load_bundle(basis).audio_model("base")  # a fused basis: mix into its base model
    part = out.with_name(out.stem + ".rec.onnx")
    x = (torch.randn(2, bundle.mel_window, audio.N_MELS), torch.full((2, 1), 0.04))
    with torch.no_grad():
        torch.onnx.export(
            m, x, str(part), input_names=["mel", "lookahead"], output_names=["units"],
            dynamic_axes={"mel": {0: "batch"}, "lookahead": {0: "batch"}, "units": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
        ref_rec = m(*x).numpy()
    fused_onnx(bundle.a2l_path, part, weight, out)
    part.unlink()
    feeds = {"mel": x[0].numpy(), "lookahead": x[1].numpy()}
    base = ort.InferenceSession(str(bundle.a2l_path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return float(np.max(np.abs(got - ((1 - weight) * base + weight * ref_rec))))


def write_bundle(basis: Path, fused: Path, out: Path, info: dict[str, object]) -> None:
    """A copy of the ``basis`` bundle whose audio drive is ``fused``; its own a2l.onnx stays as
    the baseline (manifest ``a2l.baseline``)."""
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(basis, tmp)
    shutil.copy2(fused, tmp / "a2l_fused.onnx")
    man = json.loads((tmp / "manifest.json").read_text())
    man["a2l"]["baseline"] = man["a2l"].get("baseline", man["a2l"]["file"])
    man["a2l"]["file"] = "a2l_fused.onnx"
    man["a2l"]["fused"] = info
    (tmp / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)


def runtime_units(bundle_dir: Path, s: Sample, lookahead_ms: float, audio_model: str = "fused") -> np.ndarray:
    """The bundle's audio drive (``audio_model``) on the sample's frames, as the runtime computes it."""
    bundle = load_bundle(bundle_dir).audio_model(audio_model)
    stage = AudioStage(bundle, get_backend("onnx", bundle), AudioDriveConfig(lookahead_ms=lookahead_ms))
    mel = StaticMel(s.clip.mel)
    c = s.clip
    units = np.zeros((len(c.times), bundle.n_units), np.float32)
    for i, t in enumerate(c.times):
        units[i] = stage.units_at(mel, float(t) + c.audio_lag)[0]
    return units[c.valid]


def moc(pred: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return corr(np.concatenate([p[:, GAP] for p in pred]), np.concatenate([t[:, GAP] for t in truth]))


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
