"""Train the lip-to-face generator, self-supervised on landmarks from video (no audio needed).

    python -m training.train_gen --data data/train --dev data/clips --out runs/gen

For a target frame t the generator sees the crop of t with its lower face hidden (pose), a
reference crop of the same clip at least one second away (identity; DESIGN §5), and the true
lip-motion units of frames t-4..t. It must reproduce the crop of t. Losses: L1 weighted
towards the mouth, plus an L1 on image gradients inside the mouth mask (keeps edges sharp).
Runs unchanged under ``torchrun`` (training/distributed.py; ``--batch`` is per process).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from rtdub.blend import face_mask

from . import distributed
from .common import load_checkpoint, save_checkpoint
from .data import Clip, attach_units, context_units, fit_basis, load_dir, reference_index
from .models import GenConfig, LipToFace

logger = logging.getLogger("training.gen")


def jitter(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Small random similarity warp: the reference is never perfectly aligned at run time."""
    s = img.shape[0]
    ang = rng.uniform(-3, 3) * amount
    sc = 1 + rng.uniform(-0.03, 0.03) * amount
    tx, ty = rng.uniform(-0.03, 0.03, size=2) * s * amount
    m = cv2.getRotationMatrix2D((s / 2, s / 2), ang, sc)
    m[:, 2] += (tx, ty)
    return cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def make_batch(
    clips: list[Clip], weights: np.ndarray, n: int, cfg: GenConfig, rng: np.random.Generator, aug: bool = True
) -> tuple[torch.Tensor, ...]:
    hidden = face_mask(cfg.size).hidden
    pose, ref, tgt, units = [], [], [], []
    for _ in range(n):
        c = clips[rng.choice(len(clips), p=weights)]
        i = int(rng.choice(np.nonzero(c.valid)[0]))
        ri = reference_index(c, i, rng)
        t_img = c.crops[i].copy()
        r_img = jitter(c.crops[ri], rng, 1.0) if aug else c.crops[ri]
        p_img = t_img.copy()
        p_img[hidden] = 0
        pose.append(p_img)
        ref.append(r_img)
        tgt.append(t_img)
        units.append(context_units(c, i, cfg.context))

    def to_t(xs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255

    p, r, t = to_t(pose), to_t(ref), to_t(tgt)
    if aug:  # the same photometric change on all three images
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, size=(n, 3, 1, 1)).astype(np.float32))
        bias = torch.from_numpy(rng.uniform(-0.05, 0.05, size=(n, 1, 1, 1)).astype(np.float32))
        p, r, t = ((x * gain + bias).clamp(0, 1) for x in (p, r, t))
        p = p * (1 - torch.from_numpy(hidden.astype(np.float32)))
    u = torch.from_numpy(np.stack(units).astype(np.float32))
    return p, r, u, t


def grad_l1(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return ((dxa - dxb).abs() * w[..., :, 1:]).mean() + ((dya - dyb).abs() * w[..., 1:, :]).mean()


def laplacian_var(img: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(g.astype(np.float64), cv2.CV_64F).var())


def evaluate(model: LipToFace, clips: list[Clip], cfg: GenConfig, max_frames: int = 120) -> dict[str, float]:
    """Reconstruction with true units on dev clips: masked L1 and the mouth sharpness ratio."""
    model.eval()
    soft = torch.from_numpy(face_mask(cfg.size).soft.copy())
    hidden = face_mask(cfg.size).hidden
    x0, y0, x1, y1 = face_mask(cfg.size).bbox
    l1s, sharp = [], []
    with torch.no_grad():
        for c in clips:
            assert c.raw_units is not None
            idx = np.nonzero(c.valid)[0][:max_frames]
            # reference: the most closed frame at least 1 s from the first target
            far = np.nonzero(c.valid & (c.times >= c.times[idx[0]] + 1.0))[0]
            r = int(far[np.argmin(c.raw_units[far, -1])]) if far.size else int(idx[0])
            ref = torch.from_numpy(c.crops[r]).permute(2, 0, 1).float()[None] / 255
            for s in range(0, len(idx), 32):
                sl = idx[s : s + 32]
                tgt = torch.from_numpy(c.crops[sl]).permute(0, 3, 1, 2).float() / 255
                pose = tgt * (1 - torch.from_numpy(hidden.astype(np.float32)))
                u = torch.from_numpy(np.stack([context_units(c, int(i), cfg.context) for i in sl]))
                out = model(pose, ref.expand(len(sl), -1, -1, -1), u)
                l1s.append(float(((out - tgt).abs() * soft).sum() / (soft.sum() * 3 * len(sl))))
                o8 = (out.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
                for k, i in enumerate(sl):
                    a = laplacian_var(o8[k][y0:y1, x0:x1])
                    b = laplacian_var(c.crops[i][y0:y1, x0:x1])
                    sharp.append(a / max(b, 1e-6))
    return {"masked_l1": float(np.mean(l1s)), "sharpness_ratio_crop": float(np.median(sharp))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="train the lip-to-face generator")
    p.add_argument("--data", type=Path, default=Path("data/train"))
    p.add_argument("--dev", type=Path, default=Path("data/clips"))
    p.add_argument("--out", type=Path, default=Path("runs/gen"))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--max-minutes", type=float, default=0, help="stop (and save) after this long")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--base", type=int, default=16, help="generator width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=250)
    distributed.add_arguments(p)
    args = p.parse_args(argv)
    return distributed.run(_train, args)


def _train(args: argparse.Namespace, ddp: distributed.Dist) -> int:
    rng = ddp.setup(args.seed, args.threads)

    clips = load_dir(args.data)
    dev = [c for c in load_dir(args.dev) if c.has_audio]
    basis = fit_basis(clips)
    attach_units(clips, basis)
    attach_units(dev, basis)
    cfg = GenConfig(size=clips[0].crops.shape[1], units=basis.n_units, base=args.base)
    model = LipToFace(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    meta = load_checkpoint(args.out, model, opt)
    step = int(meta["step"]) if meta else 0
    net = ddp.wrap(model)
    weights = np.array([c.valid.sum() for c in clips], np.float64)
    weights /= weights.sum()
    soft = torch.from_numpy(face_mask(cfg.size).soft.copy())[None, None]
    wmap = 1.0 + 4.0 * soft
    t0 = time.time()
    logger.info("generator %d params, resuming at step %d", sum(q.numel() for q in model.parameters()), step)
    while step < args.steps:
        model.train()
        lr = args.lr * 0.5 * (1 + np.cos(np.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        pose, ref, units, tgt = make_batch(clips, weights, args.batch, cfg, rng)
        out = net(pose, ref, units)
        l1 = ((out - tgt).abs() * wmap).mean()
        lg = grad_l1(out, tgt, soft)
        loss = l1 + 2.0 * lg
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            logger.info(
                "step %d l1 %.4f grad %.4f lr %.2e (%.0fs)", step, l1.item(), lg.item(), lr, time.time() - t0
            )
        stop = args.max_minutes > 0 and ddp.any(time.time() - t0 > args.max_minutes * 60)
        if ddp.is_main and (step % args.save_every == 0 or step == args.steps or stop):
            ev = evaluate(model, dev, cfg)
            logger.info("step %d dev %s", step, ev)
            save_checkpoint(args.out, model, opt, {"step": step, "config": cfg.to_dict(), "dev": ev})
        if stop:
            break
    ddp.finish(model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
