"""Train the lip-to-face generator, self-supervised on landmarks from video (no audio needed).

    python -m training.train_gen --data data/train --dev data/clips --out runs/gen

For a target frame t the generator sees the crop of t with its lower face hidden (pose), a
reference crop of the same clip at least one second away (identity; docs/design.md §5), and the true
lip-motion units of frames t-4..t. It must reproduce the crop of t. Losses: L1 weighted
towards the mouth, plus an L1 on image gradients inside the mouth mask (keeps edges sharp).
Runs unchanged under ``torchrun`` (training/distributed.py; ``--batch`` is per process).

The seed losses (training/gen_losses.py; all off by default, so the recipe above is unchanged):
    --ssim-weight W     W · (1 − SSIM), weighted by the lower-face mask (the perceptual term;
                        SSIM because no VGG weights are available here)
    --gan-weight W      W · hinge loss of a spectrally normalised patch discriminator on the
                        mouth box (trained alongside, lr --disc-lr)
    --sync-weight W     W · Wav2Lip's sync BCE, −log P_sync, from the frozen expert --expert on
                        windows of frames t..t+4 rendered from true (--sync-units true) or
                        audio-predicted (--sync-units a2l, frozen --a2l run) units;
                        --sync-batch windows per step, on top of --batch
    --ss-weight W       W · the stabilized sync loss L_ss (docs/design.md §3), on the same windows
    --silent-ref RUN    the identity reference is made closed-lipped by the silent-lip
                        generator G_S: a frozen generator (RUN, trained without any sync
                        loss) driven by the units of a closed, neutral mouth
    --freq-weight W     W · the focal frequency loss on the mouth box (rendered frequencies
                        weighted by their own error; against L1's spectral bias)
    --alpha-weight W    W · mean(1 − alpha) over the mouth mask: the generator copies (warps)
                        the reference wherever the reconstruction terms let it, and paints
                        its low-resolution colour less (sharper at frame resolution, where
                        the runtime warps the full-resolution reference; rtdub/render/hires.py)
    --init RUN          start from RUN's weights (fresh optimizer, step 0; its width): a fine-tune
    --teacher RUN       distil: a frozen (wider) generator run renders the same batch, and
                        --kd-weight W · (its L1 + gradient loss against the teacher's face) is
                        added to the ground-truth loss (training/ABLATION.md, "Distillation")
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rtdub.render.blend import face_mask

from . import distributed, gen_losses
from .common import cosine_lr, load_checkpoint, save_checkpoint
from .data import (
    Clip,
    attach_units,
    closed_units,
    context_units,
    fit_basis,
    load_dir,
    mel_windows,
    reference_index,
    window_starts,
)
from .generator import (  # the batches and the reconstruction loss (a library module)
    GRAD_WEIGHT,
    face_loss,
    grad_l1,
    laplacian_var,
    make_batch,
    mouth_box,
)
from .models import A2LConfig, GenConfig, GeneratorWithFields, LipToFace, build_a2l
from .syncnet import SyncConfig, mel_at

logger = logging.getLogger("training.gen")


def make_sync_batch(
    clips: list[Clip],
    starts: list[np.ndarray],
    weights: np.ndarray,
    n: int,
    cfg: GenConfig,
    frames: int,
    mel_frames: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, ...]:
    """``n`` windows of ``frames`` consecutive frames t..t+frames-1 for the sync losses:
    pose (n·F, 3, S, S), reference (n, 3, S, S), true units (n·F, context, U), target
    (n, F, 3, S, S), the expert's mel window starting at frame t (n, mel_frames, 80), and the
    clip index and frame indices (n, F) for audio-predicted units."""
    hidden = torch.from_numpy(face_mask(cfg.size).hidden.astype(np.float32))
    tgt, ref, units, mels, where = [], [], [], [], []
    scfg = SyncConfig(crop_size=cfg.size, frames=frames, mel_frames=mel_frames)
    for _ in range(n):
        ci = int(rng.choice(len(clips), p=weights))
        c = clips[ci]
        i = int(rng.choice(starts[ci]))
        idx = np.arange(i, i + frames)
        ref.append(c.crops[reference_index(c, i + frames // 2, rng)])
        tgt.append(c.crops[idx])
        units.append(np.stack([context_units(c, int(j), cfg.context) for j in idx]))
        mels.append(mel_at(c, float(c.times[i]), scfg))
        where.append(np.concatenate([[ci], idx]))

    def to_t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).float().div(255).movedim(-1, -3)

    t = to_t(np.stack(tgt))  # (n, F, 3, S, S)
    pose = t.flatten(0, 1) * (1 - hidden)
    u = torch.from_numpy(np.concatenate(units).astype(np.float32))
    return pose, to_t(np.stack(ref)), u, t, torch.from_numpy(np.stack(mels)), torch.from_numpy(np.stack(where))


def predicted_units(
    a2l: torch.nn.Module, a2l_cfg: A2LConfig, clips: list[Clip], where: torch.Tensor, context: int, lookahead: float
) -> torch.Tensor:
    """Units of frames t-context+1..t for every frame of every window, from the frozen audio
    stage (per-clip z-scored, as the runtime feeds them): (n·F, context, U)."""
    out = []
    for row in where.numpy():
        c = clips[int(row[0])]
        idx = np.arange(int(row[1]) - context + 1, int(row[-1]) + 1).clip(0, None)
        mel = mel_windows(c, idx, np.full(len(idx), lookahead), a2l_cfg.window)
        la = torch.full((len(idx), 1), a2l_cfg.input_lookahead(lookahead))
        with torch.no_grad():
            u = a2l(torch.from_numpy(mel), la)
        out += [u[k : k + context] for k in range(len(idx) - context + 1)]
    return torch.stack(out)


def silent_reference(gs: LipToFace, ref: torch.Tensor, closed: torch.Tensor) -> torch.Tensor:
    """G_S: the identity reference re-rendered with the lower face hidden and the units of a
    closed, neutral mouth, i.e. a closed-lip reference of the same person and pose."""
    hidden = torch.from_numpy(face_mask(gs.cfg.size).hidden.astype(np.float32))
    with torch.no_grad():
        return gs(ref * (1 - hidden), ref, closed.expand(len(ref), -1, -1))


def load_teacher(run: Path, student: GenConfig) -> LipToFace:
    """A frozen generator run to distil from: same crop size, units and context as the
    student (its width may differ)."""
    meta = json.loads((run / "meta.json").read_text())
    cfg = GenConfig(**meta["config"])
    for name in ("size", "units", "context"):
        if getattr(cfg, name) != getattr(student, name):
            raise SystemExit(
                f"error: teacher {run} has {name} {getattr(cfg, name)}, the student {getattr(student, name)}"
            )
    model = LipToFace(cfg)
    load_checkpoint(run, model)
    model.eval()
    logger.info("teacher %s: base %d, %d params", run, cfg.base, sum(q.numel() for q in model.parameters()))
    return model


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
    p.add_argument("--base", type=int, default=None, help="generator width (16; with --init, the run's)")
    p.add_argument("--full-colour", action="store_true", help="a colour head at full resolution (GenConfig)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--init", type=Path, default=None, help="start from this run's weights (fine-tune)")
    p.add_argument("--ssim-weight", type=float, default=0.0, help="(1 - SSIM) of the lower face")
    p.add_argument("--freq-weight", type=float, default=0.0, help="focal frequency loss on the mouth box (gen_losses)")
    p.add_argument(
        "--alpha-weight", type=float, default=0.0, help="mean(1 - alpha) in the mouth mask: copy the reference"
    )
    p.add_argument("--gan-weight", type=float, default=0.0, help="hinge GAN, SN patch discriminator on the mouth")
    p.add_argument("--disc-lr", type=float, default=1e-4)
    p.add_argument("--sync-weight", type=float, default=0.0, help="expert sync BCE (Wav2Lip)")
    p.add_argument("--ss-weight", type=float, default=0.0, help="stabilized sync loss L_ss (docs/design.md §3)")
    p.add_argument("--expert", type=Path, default=Path("runs/sync_aug"), help="torch lip-sync expert run")
    p.add_argument("--sync-batch", type=int, default=4, help="expert windows (of 5 frames) per step")
    p.add_argument("--sync-units", choices=("true", "a2l"), default="true")
    p.add_argument("--a2l", type=Path, default=Path("runs/a2l_s0"), help="frozen audio stage for --sync-units a2l")
    p.add_argument("--lookahead", type=float, default=0.1, help="s, for --sync-units a2l")
    p.add_argument("--silent-ref", type=Path, default=None, help="G_S: closed-lip references from this frozen run")
    p.add_argument("--teacher", type=Path, default=None, help="distil from this frozen generator run")
    p.add_argument("--kd-weight", type=float, default=1.0, help="weight of the teacher's face as a target")
    distributed.add_arguments(p)
    args = p.parse_args(argv)
    for name in ("ssim_weight", "freq_weight", "alpha_weight", "gan_weight", "sync_weight", "ss_weight", "kd_weight"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("init", "silent_ref", "teacher"):
        run = getattr(args, name)
        if run is not None and not ((run / "model.safetensors").is_file() and (run / "meta.json").is_file()):
            p.error(f"--{name.replace('_', '-')} {run}: not a generator run (no model.safetensors and meta.json)")
    if args.init is not None:  # a fine-tune keeps the architecture of the run it starts from
        init_cfg = json.loads((args.init / "meta.json").read_text())["config"]
        if args.base is not None and args.base != init_cfg["base"]:
            p.error(f"--base {args.base}: --init {args.init} has base {init_cfg['base']}")
        if args.full_colour and not init_cfg.get("full_colour", False):
            p.error(f"--full-colour: --init {args.init} has no full-resolution colour head")
        args.base, args.full_colour = int(init_cfg["base"]), bool(init_cfg.get("full_colour", False))
    elif args.base is None:
        args.base = 16
    if (args.sync_weight > 0 or args.ss_weight > 0) and not (args.expert / "model.safetensors").is_file():
        p.error(f"--expert {args.expert}: no model.safetensors (a torch lip-sync expert run)")
    return distributed.run(_train, args)


def _train(args: argparse.Namespace, ddp: distributed.Dist) -> int:
    rng = ddp.setup(args.seed, args.threads)

    clips = load_dir(args.data)
    dev = [c for c in load_dir(args.dev) if c.has_audio]
    basis = fit_basis(clips)
    attach_units(clips, basis)
    attach_units(dev, basis)
    if ddp.is_main:  # the units this generator reads: train the audio stage on them (train_a2l --basis)
        args.out.mkdir(parents=True, exist_ok=True)
        basis_json = {"basis_mean": basis.mean.tolist(), "basis_components": basis.components.tolist()}
        tmp = args.out / "units.json.part"
        tmp.write_text(json.dumps(basis_json))
        tmp.replace(args.out / "units.json")
    cfg = GenConfig(size=clips[0].crops.shape[1], units=basis.n_units, base=args.base, full_colour=args.full_colour)
    model = LipToFace(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    meta = load_checkpoint(args.out, model, opt)
    step = int(meta["step"]) if meta else 0
    if meta is None and args.init is not None:
        load_checkpoint(args.init, model)
        logger.info("initialised from %s", args.init)
    with_fields = GeneratorWithFields(model)  # face and fields (the alpha term reads them)
    net = ddp.wrap(with_fields)
    disc = disc_opt = None
    if args.gan_weight > 0:
        disc = gen_losses.PatchDiscriminator()
        disc_opt = torch.optim.Adam(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.999))
        if (args.out / "disc.safetensors").is_file():
            disc.load_state_dict(load_file(str(args.out / "disc.safetensors")))
    gs = closed = None
    if args.silent_ref is not None:
        gs = LipToFace(cfg)
        load_checkpoint(args.silent_ref, gs)
        gs.eval()
        closed = torch.from_numpy(closed_units(clips)).expand(cfg.context, -1)[None]
    teacher = load_teacher(args.teacher, cfg) if args.teacher is not None else None
    use_sync = args.sync_weight > 0 or args.ss_weight > 0
    expert = a2l = None
    a2l_cfg = A2LConfig()
    sync_clips: list[Clip] = []
    sync_starts: list[np.ndarray] = []
    sync_w = np.zeros(0)
    if use_sync:
        expert = gen_losses.load_expert(args.expert)
        sync_clips = [c for c in clips if c.has_audio]
        sync_starts = [window_starts(c, expert.cfg.frames) for c in sync_clips]
        sync_w = np.array([len(x) for x in sync_starts], np.float64)
        sync_w /= sync_w.sum()
        if args.sync_units == "a2l":
            a2l_cfg = A2LConfig(**json.loads((args.a2l / "meta.json").read_text())["config"])
            a2l = build_a2l(a2l_cfg)
            load_checkpoint(args.a2l, a2l)
            a2l.eval()
    weights = np.array([c.valid.sum() for c in clips], np.float64)
    weights /= weights.sum()
    soft = torch.from_numpy(face_mask(cfg.size).soft.copy())[None, None]
    wmap = 1.0 + 4.0 * soft
    recipe = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k
        in (
            "init",
            "ssim_weight",
            "freq_weight",
            "alpha_weight",
            "gan_weight",
            "sync_weight",
            "ss_weight",
            "sync_batch",
            "sync_units",
            "silent_ref",
            "teacher",
            "kd_weight",
            "lr",
            "batch",
            "seed",
            "steps",
        )
    }
    if use_sync:
        recipe["expert"] = str(args.expert)
    t0 = time.time()
    logger.info("generator %d params, resuming at step %d", sum(q.numel() for q in model.parameters()), step)
    while step < args.steps:
        model.train()
        lr = cosine_lr(opt, args.lr, step, args.steps)
        pose, ref, units, tgt = make_batch(clips, weights, args.batch, cfg, rng)
        if gs is not None and closed is not None:
            ref = silent_reference(gs, ref, closed)
        nb, nf = len(pose), 0
        if expert is not None:  # one forward for both batches (DDP allows one per backward)
            nf = expert.cfg.frames
            sp, sr, su, st, smel, where = make_sync_batch(
                sync_clips, sync_starts, sync_w, args.sync_batch, cfg, nf, expert.cfg.mel_frames, rng
            )
            if gs is not None and closed is not None:
                sr = silent_reference(gs, sr, closed)
            if a2l is not None:
                su = predicted_units(a2l, a2l_cfg, sync_clips, where, cfg.context, args.lookahead)
            pose = torch.cat([pose, sp])
            units = torch.cat([units, su])
            out, fields = net(pose, torch.cat([ref, sr.repeat_interleave(nf, 0)]), units)
            out, sout = out[:nb], out[nb:].unflatten(0, (-1, nf))
        else:
            out, fields = net(pose, ref, units)
        l1 = ((out - tgt).abs() * wmap).mean()
        lg = grad_l1(out, tgt, soft)
        loss = l1 + GRAD_WEIGHT * lg
        terms = {"l1": l1.item(), "grad": lg.item()}
        if teacher is not None:
            with torch.no_grad():
                t_out = teacher(pose[:nb], ref, units[:nb])
            lkd = face_loss(out, t_out, wmap, soft)
            loss = loss + args.kd_weight * lkd
            terms["kd"] = lkd.item()
        if args.ssim_weight > 0:
            ls = gen_losses.ssim_loss(out, tgt, soft)
            loss = loss + args.ssim_weight * ls
            terms["ssim"] = ls.item()
        if args.alpha_weight > 0:
            la = ((1 - model.alpha(fields[:nb])) * soft).mean()
            loss = loss + args.alpha_weight * la
            terms["1-alpha"] = la.item()
        if args.freq_weight > 0:
            lf = gen_losses.focal_frequency_loss(mouth_box(out, cfg.size), mouth_box(tgt, cfg.size))
            loss = loss + args.freq_weight * lf
            terms["freq"] = lf.item()
        if expert is not None:
            a_emb = expert.audio(smel)
            x = expert.avsim(sout, a_emb)
            terms["p_sync"] = x.mean().item()
            if args.sync_weight > 0:
                lsync = gen_losses.sync_bce(x)
                loss = loss + args.sync_weight * lsync
                terms["sync"] = lsync.item()
            if args.ss_weight > 0:
                with torch.no_grad():
                    y = expert.avsim(st, a_emb)
                    d = expert.avsim(sr[:, None].expand(-1, nf, -1, -1, -1), a_emb)
                lss = gen_losses.stabilized_sync_loss(x, y, d)
                loss = loss + args.ss_weight * lss
                terms["ss"] = lss.item()
                terms["p_gt"], terms["p_ref"] = y.mean().item(), d.mean().item()
        if disc is not None and disc_opt is not None:
            fake = mouth_box(out, cfg.size)
            lgan = gen_losses.hinge_g_loss(disc(fake))
            loss = loss + args.gan_weight * lgan
            terms["gan_g"] = lgan.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if disc is not None and disc_opt is not None:
            ld = gen_losses.hinge_d_loss(disc(mouth_box(tgt, cfg.size)), disc(mouth_box(out.detach(), cfg.size)))
            disc_opt.zero_grad()
            ld.backward()
            disc_opt.step()
            terms["gan_d"] = ld.item()
        step += 1
        if step % 50 == 0:
            logger.info(
                "step %d %s lr %.2e (%.0fs)",
                step,
                " ".join(f"{k} {v:.4f}" for k, v in terms.items()),
                lr,
                time.time() - t0,
            )
        stop = args.max_minutes > 0 and ddp.any(time.time() - t0 > args.max_minutes * 60)
        if ddp.is_main and (step % args.save_every == 0 or step == args.steps or stop):
            ev = evaluate(model, dev, cfg)
            logger.info("step %d dev %s", step, ev)
            save_checkpoint(args.out, model, opt, {"step": step, "config": cfg.to_dict(), "dev": ev, "recipe": recipe})
            if disc is not None:
                save_file(
                    {k: v.detach().contiguous() for k, v in disc.state_dict().items()},
                    str(args.out / "disc.safetensors"),
                )
        if stop:
            break
    ddp.finish(with_fields)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
