"""Fine-tune a trained generator so that it copies the reference wherever it can.

    python -m training.finetune_alpha --init runs/gen --data data/train --dev data/clips \\
        --out runs/gen_alpha [--steps 400] [--alpha-weight 1.0] [--threads 1]

The generator's face is ``alpha * warp(ref, flow) + (1 - alpha) * colour``. Its colour is
predicted at S/2, so every bit of ``1 - alpha`` blends a blurry synthesis into the warped
reference, and the runtime's hi-res compositing (rtdub/hires.py) can only sharpen the warped
part. This continues training from ``--init`` with the generator's own losses (mouth-weighted
L1, gradient L1) plus ``alpha_weight * mean((1 - alpha) * lower-face mask)``: alpha is pushed
to 1 everywhere in the lower face, and the reconstruction terms keep it lower only where the
reference has nothing to offer (an opened mouth over a closed reference). The unit basis is
the one ``--init`` was trained with (fitted on the same ``--data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rtdub.blend import face_mask

from .common import cosine_lr, load_checkpoint, save_checkpoint
from .data import attach_units, fit_basis, load_dir
from .models import GenConfig, LipToFace
from .train_gen import evaluate, grad_l1, make_batch

logger = logging.getLogger("training.finetune_alpha")


def alpha_stats(model: LipToFace, batch: tuple[torch.Tensor, ...], soft: torch.Tensor) -> float:
    """Mean alpha over the lower-face mask on one batch."""
    pose, ref, units, _ = batch
    with torch.no_grad():
        a = model.fields(pose, ref, units)[:, 2:3]
    return float((a * soft).sum() / (soft.sum() * a.shape[0]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fine-tune the generator towards alpha = 1")
    p.add_argument("--init", type=Path, required=True, help="trained generator run (safetensors + meta.json)")
    p.add_argument("--data", type=Path, default=Path("data/train"))
    p.add_argument("--dev", type=Path, default=Path("data/clips"))
    p.add_argument("--out", type=Path, default=Path("runs/gen_alpha"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--alpha-weight", type=float, default=1.0)
    p.add_argument("--max-minutes", type=float, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not (args.init / "meta.json").is_file():
        print(f"finetune_alpha: error: {args.init}: not a generator run (no meta.json)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    clips = load_dir(args.data)
    dev = [c for c in load_dir(args.dev) if c.has_audio]
    basis = fit_basis(clips)
    attach_units(clips, basis)
    attach_units(dev, basis)
    init_meta = json.loads((args.init / "meta.json").read_text())
    cfg = GenConfig(**init_meta["config"])
    model = LipToFace(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    meta = load_checkpoint(args.out, model, opt)
    if meta is None:
        load_checkpoint(args.init, model)
        step = 0
    else:
        step = int(meta["step"])
    weights = np.array([c.valid.sum() for c in clips], np.float64)
    weights /= weights.sum()
    soft = torch.from_numpy(face_mask(cfg.size).soft.copy())[None, None]
    wmap = 1.0 + 4.0 * soft
    probe = make_batch(clips, weights, 32, cfg, np.random.default_rng(123), aug=False)
    logger.info("resuming at step %d; mean alpha in the mask %.3f", step, alpha_stats(model, probe, soft))
    t0 = time.time()
    while step < args.steps:
        model.train()
        cosine_lr(opt, args.lr, step, args.steps)
        pose, ref, units, tgt = make_batch(clips, weights, args.batch, cfg, rng)
        fields = model.fields(pose, ref, units)
        out = model.compose(ref, fields)
        l1 = ((out - tgt).abs() * wmap).mean()
        lg = grad_l1(out, tgt, soft)
        la = ((1 - fields[:, 2:3]) * soft).mean()
        loss = l1 + 2.0 * lg + args.alpha_weight * la
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            logger.info(
                "step %d l1 %.4f grad %.4f 1-alpha %.4f (%.0fs)",
                step,
                l1.item(),
                lg.item(),
                la.item(),
                time.time() - t0,
            )
        stop = args.max_minutes > 0 and time.time() - t0 > args.max_minutes * 60
        if step % args.save_every == 0 or step == args.steps or stop:
            ev = evaluate(model, dev, cfg)
            ev["mask_alpha"] = alpha_stats(model, probe, soft)
            logger.info("step %d dev %s", step, ev)
            save_checkpoint(
                args.out,
                model,
                opt,
                {
                    "step": step,
                    "config": cfg.to_dict(),
                    "dev": ev,
                    "init": str(args.init),
                    "alpha_weight": args.alpha_weight,
                },
            )
        if stop:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
