"""Train the audio-to-lip stage on prepared shards.

    python -m training.train_a2l --data data/train --dev data/clips --out runs/a2l

Targets are per-speaker z-scored lip-motion units; the lookahead of every sample is drawn
from [0, max_lookahead], so one model serves every configured lookahead. Checkpoints are
saved every ``--save-every`` steps and a run resumes from its last checkpoint. Runs unchanged
under ``torchrun`` (training/distributed.py; ``--batch`` is per process). Other tools read a
run back (its model and predictions) through training/a2l_runs.py.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from rtdub import audio

from . import distributed
from .a2l_runs import load_run, predict_mel
from .common import load_checkpoint, pearson, save_checkpoint
from .data import Clip, attach_units, closed_units, fit_basis, load_basis, load_dir, mel_windows
from .models import A2LConfig, build_a2l
from .phones import load_shards

logger = logging.getLogger("training.a2l")
LOOKAHEADS = (0.0, 0.04, 0.08, 0.12)


def smooth_causal(u: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """Causal weighted average over frames (last weight applies to the current frame)."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    k = len(w)
    pad = np.concatenate([np.repeat(u[:1], k - 1, axis=0), u])
    return sum(w[j] * pad[j : j + len(u)] for j in range(k)).astype(np.float32)


def predict_clip(model: torch.nn.Module, clip: Clip, lookahead: float, batch: int = 512) -> np.ndarray:
    return predict_mel(model, clip.mel, clip.times, lookahead, batch)


def envelope_baseline(clip: Clip, half_window: float = 0.05) -> np.ndarray:
    """Loudness envelope (dB RMS over ±50 ms) at each frame: the baseline to beat."""
    sr = audio.SAMPLE_RATE
    out = np.empty(len(clip.times), np.float32)
    for i, t in enumerate(clip.times):
        a = clip.wav[max(0, int((t - half_window) * sr)) : int((t + half_window) * sr)]
        out[i] = 10 * np.log10(np.mean(a.astype(np.float64) ** 2) + 1e-8) if a.size else -80
    return out


def _means(per: dict[str, float], groups: dict[str, str], key: str, res: dict[str, object]) -> None:
    res[f"mean_{key}"] = float(np.mean(list(per.values())))
    for g in sorted(set(groups.values())):
        vals = [v for n, v in per.items() if groups.get(n) == g]
        if vals:
            res[f"{g}_{key}"] = float(np.mean(vals))


def evaluate(
    model: torch.nn.Module, clips: list[Clip], smoothing: tuple[float, ...], groups: dict[str, str] | None = None
) -> dict[str, object]:
    """Gap correlation per held-out clip and lookahead, the envelope baseline on the same
    frames, and their means over all clips and per group (clip name -> group name)."""
    groups = groups or {}
    res: dict[str, object] = {}
    for la in LOOKAHEADS:
        per = {}
        for c in clips:
            assert c.raw_units is not None
            pred = smooth_causal(predict_clip(model, c, la), smoothing)
            per[c.name] = pearson(pred[c.valid, -1], c.raw_units[c.valid, -1])
        key = f"gap_corr@{int(la * 1000)}ms"
        res[key] = per
        _means(per, groups, key, res)
    env = {
        c.name: pearson(envelope_baseline(c)[c.valid], c.raw_units[c.valid, -1])
        for c in clips
        if c.raw_units is not None
    }
    res["envelope_corr"] = env
    _means(env, groups, "envelope_corr", res)
    return res


@dataclass
class KdSource:
    """Audio with teacher outputs at frame times: what a student learns besides ground truth."""

    name: str
    mel: np.ndarray
    times: np.ndarray
    units: np.ndarray  # teacher's z-units per time


def distill_sources(
    args: argparse.Namespace, clips: list[Clip], every: list[Clip], is_held: dict[str, bool], units: int
) -> list[KdSource]:
    """Teacher outputs on every frame of the training clips (landmarks or not), on the audio of
    the generated clips and, with --kd-tts, on TTS speech (25 frames/s)."""
    teacher = load_run(args.teacher)
    if teacher.cfg.units != units:  # type: ignore[union-attr]
        raise SystemExit(f"error: teacher {args.teacher} predicts {teacher.cfg.units} units, not {units}")  # type: ignore[union-attr]
    t0 = time.time()
    out = []
    names = {c.name for c in clips}
    for c in every:
        if c.has_audio and not is_held[c.name] and (c.name in names or not c.real):
            out.append(KdSource(c.name, c.mel, c.times, predict_mel(teacher, c.mel, c.times, 0.0)))
    if args.kd_tts is not None:
        left = args.kd_tts_minutes * 60
        for s in load_shards(args.kd_tts)[:-1]:  # the last shard stays held out, as in pretraining
            if left <= 0:
                break
            times = np.arange(0, len(s.wav) / audio.SAMPLE_RATE, 1 / 25.0)
            out.append(KdSource(s.name, s.mel, times, predict_mel(teacher, s.mel, times, 0.0)))
            left -= times[-1]
    logger.info("teacher targets for %s (%.0f s)", [s.name for s in out], time.time() - t0)
    return out


def distill_batch(
    kd: list[KdSource], rng: np.random.Generator, n: int, cfg: A2LConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lens = np.array([len(s.times) for s in kd], np.float64)
    mels, las, targets = [], [], []
    for k in rng.choice(len(kd), size=n, p=lens / lens.sum()):
        s = kd[k]
        i = int(rng.integers(len(s.times)))
        la = float(rng.uniform(0, cfg.max_lookahead))
        mels.append(audio.mel_window(s.mel, float(s.times[i]), cfg.input_lookahead(la), cfg.window))
        las.append(la)
        targets.append(s.units[i])
    return (
        torch.from_numpy(np.stack(mels)),
        torch.tensor(las, dtype=torch.float32)[:, None],
        torch.from_numpy(np.stack(targets)),
    )


def init_from(model: torch.nn.Module, run: Path) -> None:
    """Copy the weights of a pretrained run whose names and shapes match (the encoder and
    hidden layers; an output layer of another size is left at its fresh initialisation)."""
    path = run / "model.safetensors"
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist")
    pre = load_file(str(path))
    own = model.state_dict()
    take = {k: v for k, v in pre.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    logger.info(
        "initialised %d/%d tensors from %s (skipped %s)", len(take), len(own), run, sorted(set(own) - set(take))
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="train the audio-to-lip stage")
    p.add_argument("--data", type=Path, default=Path("data/train"))
    p.add_argument("--dev", type=Path, default=Path("data/clips"), help="held out: unseen speakers")
    p.add_argument("--holdout", default="*feifeili*", help="held-out training identity (glob, '' for none)")
    p.add_argument("--out", type=Path, default=Path("runs/a2l"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--include-generated", action="store_true", help="also train on generated_* clips")
    p.add_argument("--smoothing", default="0.25,0.75", help="causal weights over frames t-k..t")
    p.add_argument("--init", type=Path, help="pretrained run dir: load every weight whose name and shape match")
    p.add_argument("--arch", choices=("conv", "cals", "teacher"), default="conv", help="see A2LConfig.for_arch")
    p.add_argument(
        "--basis", type=Path, help="unit basis of this run (units.json) or bundle (manifest.json) instead of a fit"
    )
    p.add_argument("--teacher", type=Path, help="distil: a trained run whose outputs are extra targets")
    p.add_argument("--kd-weight", type=float, default=1.0, help="weight of the teacher targets")
    p.add_argument("--kd-tts", type=Path, help="distil also on these TTS shards (training.tts_data)")
    p.add_argument("--kd-tts-minutes", type=float, default=20.0, help="at most this much TTS audio")
    distributed.add_arguments(p)
    args = p.parse_args(argv)
    return distributed.run(_train, args)


def _train(args: argparse.Namespace, ddp: distributed.Dist) -> int:
    rng = ddp.setup(args.seed, args.threads)
    smoothing = tuple(float(x) for x in args.smoothing.split(","))

    every = load_dir(args.data)
    is_held = {c.name: bool(args.holdout) and fnmatch.fnmatch(c.name, args.holdout) for c in every}
    held = [c for c in every if c.has_audio and is_held[c.name]]
    clips = [c for c in every if c.has_audio and (c.real or args.include_generated) and not is_held[c.name]]
    dev = [c for c in load_dir(args.dev) if c.has_audio]
    groups = {c.name: "dev" for c in dev} | {c.name: "holdout" for c in held}
    dev += held
    # the unit basis is fitted on the training clips only, or taken from --basis (the units a
    # generator was trained on, so the two stages can be bundled together)
    basis = load_basis(args.basis) if args.basis else fit_basis([c for c in every if not is_held[c.name]])
    attach_units(clips, basis)
    attach_units(dev, basis)
    logger.info("train clips %s, held out %s", [c.name for c in clips], [c.name for c in dev])

    cfg = A2LConfig.for_arch(args.arch).replace(units=basis.n_units)
    model = build_a2l(cfg)
    kd = distill_sources(args, clips, every, is_held, basis.n_units) if args.teacher else []
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    meta = load_checkpoint(args.out, model, opt)
    if meta is None and args.init is not None:
        init_from(model, args.init)
    step = int(meta["step"]) if meta else 0
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, last_epoch=step - 1 if step else -1
    )
    net = ddp.wrap(model)

    weights = np.array([c.valid.sum() for c in clips], np.float64)
    weights /= weights.sum()
    unit_w = torch.ones(cfg.units)
    unit_w[-1] = 3.0  # the inner gap is what a viewer reads
    t0 = time.time()
    while step < args.steps:
        model.train()
        # a student spends half of each batch on teacher targets: the same compute per step
        ci = rng.choice(len(clips), size=args.batch // 2 if kd else args.batch, p=weights)
        mels, targets, las = [], [], []
        for k in np.unique(ci):
            c = clips[k]
            n = int((ci == k).sum())
            idx = rng.choice(np.nonzero(c.valid)[0], size=n)
            la = rng.uniform(0, cfg.max_lookahead, size=n)
            mels.append(mel_windows(c, idx, np.array([cfg.input_lookahead(a) for a in la]), cfg.window))
            assert c.units is not None
            targets.append(c.units[idx])
            las.append(la)
        mel = torch.from_numpy(np.concatenate(mels))
        mel = mel + 0.05 * torch.randn_like(mel)
        target = torch.from_numpy(np.concatenate(targets))
        la_t = torch.from_numpy(np.concatenate(las).astype(np.float32))[:, None]
        pred = net(mel, la_t)
        loss = (((pred - target) ** 2) * unit_w).mean()
        if kd:
            kmel, kla, ktarget = distill_batch(kd, rng, args.batch - args.batch // 2, cfg)
            kpred = net(kmel + 0.05 * torch.randn_like(kmel), kla)
            loss = loss + args.kd_weight * (((kpred - ktarget) ** 2) * unit_w).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 100 == 0:
            logger.info("step %d loss %.4f (%.1fs)", step, loss.item(), time.time() - t0)
        if ddp.is_main and (step % args.save_every == 0 or step == args.steps):
            ev = evaluate(model, dev, smoothing, groups)
            logger.info("step %d dev %s", step, {k: v for k, v in ev.items() if k.startswith("mean")})
            save_checkpoint(args.out, model, opt, {"step": step, "config": cfg.to_dict(), "dev": ev})
    ddp.finish(model)
    if not ddp.is_main:
        return 0
    # what export needs beside the weights
    extra = {
        "basis_mean": basis.mean.tolist(),
        "basis_components": basis.components.tolist(),
        "closed_units": closed_units(clips).tolist(),
        "smoothing": list(smoothing),
    }
    (args.out / "units.json").write_text(json.dumps(extra))
    final = evaluate(model, dev, smoothing, groups)
    final["seed"] = args.seed
    final["steps"] = args.steps
    final["extra"] = {"arch": args.arch, "params": sum(p.numel() for p in model.parameters())}
    (args.out / "eval.json").write_text(json.dumps(final, indent=1))
    logger.info("final %s", {k: v for k, v in final.items() if k.startswith("mean")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
