"""Train the audio-to-lip stage on prepared shards.

    python -m training.train_a2l --data data/train --dev data/clips --out runs/a2l

Targets are per-speaker z-scored lip-motion units; the lookahead of every sample is drawn
from [0, max_lookahead], so one model serves every configured lookahead. Checkpoints are
saved every ``--save-every`` steps and a run resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from rtdub import audio
from rtdub.lipunits import LipBasis

from .common import load_checkpoint, pearson, save_checkpoint, setup
from .data import Clip, attach_units, closed_units, fit_basis, load_dir, mel_windows
from .models import A2LConfig, AudioToLip

logger = logging.getLogger("training.a2l")
LOOKAHEADS = (0.0, 0.04, 0.08, 0.12)


def smooth_causal(u: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """Causal weighted average over frames (last weight applies to the current frame)."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    k = len(w)
    pad = np.concatenate([np.repeat(u[:1], k - 1, axis=0), u])
    return sum(w[j] * pad[j : j + len(u)] for j in range(k)).astype(np.float32)


def predict_clip(model: AudioToLip, clip: Clip, lookahead: float, batch: int = 512) -> np.ndarray:
    model.eval()
    idx = np.arange(len(clip.times))
    outs = []
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            sl = idx[s : s + batch]
            mel = mel_windows(clip, sl, np.full(len(sl), lookahead), model.cfg.window)
            la = torch.full((len(sl), 1), lookahead)
            outs.append(model(torch.from_numpy(mel), la).numpy())
    return np.concatenate(outs)


def envelope_baseline(clip: Clip, half_window: float = 0.05) -> np.ndarray:
    """Loudness envelope (dB RMS over ±50 ms) at each frame: the baseline to beat."""
    sr = audio.SAMPLE_RATE
    out = np.empty(len(clip.times), np.float32)
    for i, t in enumerate(clip.times):
        a = clip.wav[max(0, int((t - half_window) * sr)) : int((t + half_window) * sr)]
        out[i] = 10 * np.log10(np.mean(a.astype(np.float64) ** 2) + 1e-8) if a.size else -80
    return out


def evaluate(model: AudioToLip, clips: list[Clip], smoothing: tuple[float, ...]) -> dict[str, object]:
    res: dict[str, object] = {}
    for la in LOOKAHEADS:
        per = {}
        for c in clips:
            assert c.raw_units is not None
            pred = smooth_causal(predict_clip(model, c, la), smoothing)
            per[c.name] = pearson(pred[c.valid, -1], c.raw_units[c.valid, -1])
        res[f"gap_corr@{int(la * 1000)}ms"] = per
        res[f"mean_gap_corr@{int(la * 1000)}ms"] = float(np.mean(list(per.values())))
    env = {
        c.name: pearson(envelope_baseline(c)[c.valid], c.raw_units[c.valid, -1])
        for c in clips
        if c.raw_units is not None
    }
    res["envelope_corr"] = env
    res["mean_envelope_corr"] = float(np.mean(list(env.values())))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="train the audio-to-lip stage")
    p.add_argument("--data", type=Path, default=Path("data/train"))
    p.add_argument("--dev", type=Path, default=Path("data/clips"))
    p.add_argument("--out", type=Path, default=Path("runs/a2l"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--include-generated", action="store_true", help="also train on generated_* clips")
    p.add_argument("--smoothing", default="0.25,0.75", help="causal weights over frames t-k..t")
    args = p.parse_args(argv)
    rng = setup(args.seed, args.threads)
    smoothing = tuple(float(x) for x in args.smoothing.split(","))

    clips = [c for c in load_dir(args.data) if c.has_audio and (c.real or args.include_generated)]
    dev = [c for c in load_dir(args.dev) if c.has_audio]
    basis = fit_basis(load_dir(args.data))
    attach_units(clips, basis)
    attach_units(dev, basis)
    logger.info("train clips %s, dev clips %s", [c.name for c in clips], [c.name for c in dev])

    cfg = A2LConfig(units=basis.n_units)
    model = AudioToLip(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    meta = load_checkpoint(args.out, model, opt)
    step = int(meta["step"]) if meta else 0
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, last_epoch=step - 1 if step else -1
    )

    weights = np.array([c.valid.sum() for c in clips], np.float64)
    weights /= weights.sum()
    unit_w = torch.ones(cfg.units)
    unit_w[-1] = 3.0  # the inner gap is what a viewer reads
    t0 = time.time()
    while step < args.steps:
        model.train()
        ci = rng.choice(len(clips), size=args.batch, p=weights)
        mels, targets, las = [], [], []
        for k in np.unique(ci):
            c = clips[k]
            n = int((ci == k).sum())
            idx = rng.choice(np.nonzero(c.valid)[0], size=n)
            la = rng.uniform(0, cfg.max_lookahead, size=n)
            mels.append(mel_windows(c, idx, la, cfg.window))
            assert c.units is not None
            targets.append(c.units[idx])
            las.append(la)
        mel = torch.from_numpy(np.concatenate(mels))
        mel = mel + 0.05 * torch.randn_like(mel)
        target = torch.from_numpy(np.concatenate(targets))
        la_t = torch.from_numpy(np.concatenate(las).astype(np.float32))[:, None]
        pred = model(mel, la_t)
        loss = (((pred - target) ** 2) * unit_w).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 100 == 0:
            logger.info("step %d loss %.4f (%.1fs)", step, loss.item(), time.time() - t0)
        if step % args.save_every == 0 or step == args.steps:
            ev = evaluate(model, dev, smoothing)
            logger.info("step %d dev %s", step, {k: v for k, v in ev.items() if k.startswith("mean")})
            save_checkpoint(args.out, model, opt, {"step": step, "config": cfg.to_dict(), "dev": ev})
    # what export needs beside the weights
    extra = {
        "basis_mean": basis.mean.tolist(),
        "basis_components": basis.components.tolist(),
        "closed_units": closed_units(clips).tolist(),
        "smoothing": list(smoothing),
    }
    (args.out / "units.json").write_text(json.dumps(extra))
    final = evaluate(model, dev, smoothing)
    (args.out / "eval.json").write_text(json.dumps(final, indent=1))
    logger.info("final %s", {k: v for k, v in final.items() if k.startswith("mean")})
    return 0


def load_basis(run: Path) -> LipBasis:
    d = json.loads((run / "units.json").read_text())
    return LipBasis(np.asarray(d["basis_mean"], np.float32), np.asarray(d["basis_components"], np.float32))


if __name__ == "__main__":
    raise SystemExit(main())
