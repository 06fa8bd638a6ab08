"""Train the lip-sync expert (training/syncnet.py) on prepared shards.

    python -m training.train_sync --data data2/train --out runs/sync_aug --augment
    python -m training.train_sync --data data2/train --out runs/sync_plain

Held out from training: every clip whose name matches ``--holdout`` (default: the feifeili
clips, a whole identity) and everything in ``--dev`` (the speaker_* clips); the held-out loss
and accuracy (random pairs, half in sync, half shifted by 2..15 frames) are logged at every
checkpoint. A batch is made of runs of ``--run-length`` consecutive windows of one clip; every
video window is paired with every audio window of its run, so the off-sync negatives are
windows of the same clip shifted by 2..15 frames (±1 is ignored). Loss: Wav2Lip's BCE on
P_sync = max(cos, ε), positives and negatives weighted equally, plus ``--ce-weight`` times a
multi-way offset cross-entropy (softmax over the run of cos/τ, as in Chung et al.'s "Perfect
Match"): with the BCE alone the loss sat at ln 2 for the first 250 steps (6 minutes) on
2 cores, the known plateau of the Wav2Lip expert.
``--augment`` adds AVSyncNet's augmentation: one random similarity (shift, rotation, scale)
per sample, applied to the whole 96 px crop before the lower half is cut, so the expert's
score does not depend on small misalignments of the crop. Checkpoints (safetensors) every
``--save-every`` steps (``--keep``: each also kept in OUT/steps/STEP); a run resumes from its
last checkpoint.

Generalisation to unseen speakers (training/sync_augment.py): ``--appearance`` and
``--voice`` randomise what does not carry sync (colour, lighting, blur, noise, erased
patches of the lower face away from the mouth; gain, mel-bin shift, noise floor, masks), per
run of windows; ``--gray``, ``--downsample 2`` and ``--standardize`` take colour, detail and
brightness out of the video input inside the graph (the bundle's input is unchanged);
``--lip-weight`` adds an auxiliary regression of per-clip z-scored mouth geometry (inner
gap, width, height of each of the 5 frames) from the video features, ``--audio-lip-weight``
the same regression from the audio features (so that the audio side must encode the mouth's
shape over the window, not only what separates the training voices). Every checkpoint also
logs the held-out AV-offset accuracy (training/sync_probe.py). Runs unchanged under
``torchrun`` (training/distributed.py; ``--batch`` is per process).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from rtdub.measure.avsync import video_input

from . import distributed
from .common import load_checkpoint, save_checkpoint
from .data import Clip, apply_audio_offsets, load_dir, offset_records, window_starts
from .sync_augment import Appearance, Voice, apply_appearance, apply_voice, draw_appearance, draw_voice, lip_targets
from .sync_probe import offset_probe
from .syncnet import SyncConfig, SyncNet, count_params, mel_at, sync_loss

logger = logging.getLogger("training.sync")


class Embeddings(nn.Module):
    """Both encoders in one forward, so that DistributedDataParallel sees the training step."""

    def __init__(self, model: SyncNet) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, frames: torch.Tensor, mel: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Unit video and audio embeddings, and the lip heads' predictions from the video and
        from the audio features (None for a head the config does not have)."""
        vf = self.model.video.features(frames)
        af = self.model.audio.features(mel)
        vh, ah = self.model.lip_head, self.model.audio_lip_head
        return (
            nn.functional.normalize(vf, dim=1, eps=1e-8),
            nn.functional.normalize(af, dim=1, eps=1e-8),
            vh(vf) if vh is not None else None,
            ah(af) if ah is not None else None,
        )


@dataclass(frozen=True)
class Augment:
    """Ranges of the random similarity applied to a sample's crops (AVSyncNet)."""

    shift_x: float = 0.10  # fraction of the crop side
    shift_y: float = 0.05
    rotate_deg: float = 8.0
    scale: float = 0.08  # ±


def augment_window(win: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """One random similarity for all frames of a (5, S, S, 3) window, about the crop centre."""
    s = win.shape[1]
    ang = rng.uniform(-aug.rotate_deg, aug.rotate_deg)
    sc = 1.0 + rng.uniform(-aug.scale, aug.scale)
    m = cv2.getRotationMatrix2D((s / 2, s / 2), ang, sc)
    m[0, 2] += rng.uniform(-aug.shift_x, aug.shift_x) * s
    m[1, 2] += rng.uniform(-aug.shift_y, aug.shift_y) * s
    return np.stack(
        [cv2.warpAffine(f, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for f in win]
    )


def sample_batch(
    clips: list[Clip],
    starts: list[np.ndarray],
    weights: np.ndarray,
    batch: int,
    cfg: SyncConfig,
    rng: np.random.Generator,
    max_shift: int,
    aug: Augment | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    vids, mels, labels = [], [], []
    for k in range(batch):
        ci = int(rng.choice(len(clips), p=weights))
        c = clips[ci]
        i = int(rng.choice(starts[ci]))
        positive = k % 2 == 0
        if positive:
            ta = float(c.times[i])
        else:
            shift = int(rng.integers(2, max_shift + 1)) * (1 if rng.random() < 0.5 else -1)
            j = i + shift
            if not 0 <= j < len(c.times):
                j = i - shift
            ta = float(c.times[j])
        win = c.crops[i : i + cfg.frames]
        if rng.random() < 0.5:
            win = win[:, :, ::-1]
        if aug is not None:
            win = augment_window(np.ascontiguousarray(win), rng, aug)
        vids.append(win)
        mels.append(mel_at(c, ta, cfg))
        labels.append(1.0 if positive else 0.0)
    v = torch.from_numpy(video_input(np.stack(vids)))
    m = torch.from_numpy(np.stack(mels))
    return v, m, torch.tensor(labels, dtype=torch.float32)


def sample_runs(
    clips: list[Clip],
    starts: list[np.ndarray],
    weights: np.ndarray,
    runs: int,
    length: int,
    cfg: SyncConfig,
    rng: np.random.Generator,
    aug: Augment | None,
    appearance: Appearance | None = None,
    voice: Voice | None = None,
    lips: list[np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``runs`` runs of ``length`` consecutive windows: video (R·L, 15, S/2, S) and the audio
    window of each of the same frames (R·L, 16, 80). Within a run, video window i and audio
    window j are in sync only for i = j: every other pair is an off-sync pair of the same clip
    (offsets up to ±(length − 1) frames), so one batch holds R·L² pairs. Third: the lip
    targets of each window's frames (R·L, 3·frames), from ``lips`` (zeros without)."""
    vids, mels, tgts = [], [], []
    for _ in range(runs):
        ci = int(rng.choice(len(clips), p=weights))
        c = clips[ci]
        ok = starts[ci][np.isin(starts[ci] + length - 1, starts[ci])]
        ok = ok[np.all(np.isin(ok[:, None] + np.arange(length)[None, :], starts[ci]), axis=1)] if ok.size else ok
        i0 = int(rng.choice(ok if ok.size else starts[ci]))
        flip = rng.random() < 0.5
        look = draw_appearance(rng, appearance) if appearance is not None else None
        sound = draw_voice(rng, voice) if voice is not None else None
        for t in range(length):
            i = min(i0 + t, len(c.times) - cfg.frames)
            win = c.crops[i : i + cfg.frames]
            if flip:
                win = win[:, :, ::-1]
            if aug is not None:
                win = augment_window(np.ascontiguousarray(win), rng, aug)
            if look is not None and appearance is not None:
                win = apply_appearance(win, look, rng, appearance)
            mel = mel_at(c, float(c.times[i]), cfg)
            if sound is not None and voice is not None:
                mel = apply_voice(mel, sound, rng, voice)
            vids.append(win)
            mels.append(mel)
            tgts.append(lips[ci][i : i + cfg.frames].reshape(-1) if lips is not None else np.zeros(3 * cfg.frames))
    return (
        torch.from_numpy(video_input(np.stack(vids))),
        torch.from_numpy(np.stack(mels)),
        torch.from_numpy(np.stack(tgts).astype(np.float32)),
    )


def dense_losses(
    v: torch.Tensor, a: torch.Tensor, runs: int, eps: float, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE on P_sync = max(cos, ε) over all pairs of each run (in sync: i = j; off sync:
    |i − j| ≥ 2; |i − j| = 1 is ignored), positives and negatives weighted equally; and the
    multi-way offset cross-entropy (softmax of cos/τ over the run, both directions)."""
    e = v.shape[1]
    vv, aa = v.view(runs, -1, e), a.view(runs, -1, e)
    cos = torch.bmm(vv, aa.transpose(1, 2))  # (R, L, L)
    n = cos.shape[1]
    idx = torch.arange(n)
    gap = (idx[:, None] - idx[None, :]).abs()
    pos, neg = gap == 0, gap >= 2
    p = cos.clamp(min=eps, max=1 - 1e-6)
    bce = -0.5 * torch.log(p[:, pos]).mean() - 0.5 * torch.log(1 - p[:, neg]).mean()
    logits = (cos / tau).masked_fill((gap == 1)[None], float("-inf"))
    target = idx.repeat(runs)
    ce = 0.5 * (
        torch.nn.functional.cross_entropy(logits.reshape(-1, n), target)
        + torch.nn.functional.cross_entropy(logits.transpose(1, 2).reshape(-1, n), target)
    )
    return bce, ce


def run_weights(train: list[Clip], extra: list[Clip], share: float, frames: int) -> np.ndarray:
    """Sampling probability of each clip of ``train + extra``: by window count within each
    group, the extra group getting ``share`` of the runs in all (none without extra clips)."""

    def within(clips: list[Clip]) -> np.ndarray:
        n = np.array([len(window_starts(c, frames)) for c in clips], np.float64)
        return n / n.sum() if n.sum() > 0 else n

    if not extra:
        return within(train)
    return np.concatenate([within(train) * (1 - share), within(extra) * share])


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for floating-point tensors (parameters and
    BatchNorm statistics alike); integer buffers (batch counters) are copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.is_floating_point():
            e.mul_(decay).add_(m, alpha=1 - decay)
        else:
            e.copy_(m)


def _best_score(path: Path) -> tuple[float, float] | None:
    """The validation score of the checkpoint kept in ``path`` (a resumed run keeps its best)."""
    meta = path / "meta.json"
    if not meta.is_file():
        return None
    vo = json.loads(meta.read_text()).get("validation_offsets")
    return (float(vo["within_1"]), float(vo["exact"])) if vo else None


@torch.no_grad()
def held_out_scores(model: SyncNet, clips: list[Clip], cfg: SyncConfig, seed: int = 123) -> dict[str, float]:
    """Loss and pair accuracy (P > 0.5) on a fixed set of held-out pairs."""
    was = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    starts = [window_starts(c, cfg.frames) for c in clips]
    w = np.array([len(s) for s in starts], np.float64)
    v, m, y = sample_batch(clips, starts, w / w.sum(), 256, cfg, rng, 15, None)
    p = model(v, m)
    model.train(was)
    return {
        "loss": float(sync_loss(p, y)),
        "acc": float(((p > 0.5).float() == y).float().mean()),
        "p_pos": float(p[y == 1].mean()),
        "p_neg": float(p[y == 0].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="train the lip-sync expert")
    p.add_argument("--data", type=Path, default=Path("data2/train"))
    p.add_argument("--dev", type=Path, default=Path("data2/clips"), help="held out (speaker_*)")
    p.add_argument("--holdout", default="*feifeili*", help="held-out training identity (glob)")
    p.add_argument(
        "--validate",
        default="",
        help="clips of --data (glob) left out of training and used to pick the checkpoint: OUT/best",
    )
    p.add_argument(
        "--extra", type=Path, action="append", default=[], help="more training shards (e.g. training.synth_talk)"
    )
    p.add_argument("--extra-share", type=float, default=0.5, help="fraction of runs drawn from --extra clips")
    p.add_argument(
        "--audio-offsets",
        type=Path,
        help="training.offset_check --json readings: training clips found off sync are read at their offset",
    )
    p.add_argument("--offset-min", type=int, default=2, help="--audio-offsets: smallest |offset| (frames) applied")
    p.add_argument("--out", type=Path, default=Path("runs/sync"))
    p.add_argument("--augment", action="store_true", help="AVSyncNet shift/rotation/scale augmentation")
    p.add_argument("--appearance", action="store_true", help="colour/blur/noise/erasing augmentation")
    p.add_argument("--voice", action="store_true", help="mel gain/shift/floor/mask augmentation")
    p.add_argument("--gray", action="store_true", help="video encoder sees luma only")
    p.add_argument("--downsample", type=int, default=1, choices=(1, 2), help="pool the video input")
    p.add_argument("--standardize", action="store_true", help="standardise each video window")
    p.add_argument("--lip-weight", type=float, default=0.0, help="auxiliary mouth-geometry regression")
    p.add_argument("--audio-lip-weight", type=float, default=0.0, help="the same regression from the audio features")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights (decay per step, e.g. 0.995): "
        "checkpoints, probes and OUT/best are the average (the raw weights go on in OUT/raw)",
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=0.0, help="stop (and save) after this wall time")
    p.add_argument("--batch", type=int, default=64, help="video windows per step")
    p.add_argument("--run-length", type=int, default=16, help="consecutive windows per run (dense pairs)")
    p.add_argument("--ce-weight", type=float, default=1.0, help="multi-way offset term (0: BCE only)")
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="cosine: decay to 0 over what is left (of --minutes, or of --steps) when this invocation starts",
    )
    p.add_argument("--max-shift", type=int, default=15, help="negatives: 2..max-shift frames off")
    p.add_argument("--embed", type=int, default=256)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--keep", action="store_true", help="also keep every checkpoint, in OUT/steps/STEP")
    distributed.add_arguments(p)
    args = p.parse_args(argv)
    args.offset_records = []
    if args.audio_offsets is not None:
        try:
            args.offset_records = offset_records(json.loads(args.audio_offsets.read_text()))
        except (OSError, ValueError) as exc:
            p.error(f"--audio-offsets: {args.audio_offsets}: {exc}")
    return distributed.run(_train, args)


def _train(args: argparse.Namespace, ddp: distributed.Dist) -> int:
    rng = ddp.setup(args.seed, args.threads)

    every = [c for c in load_dir(args.data) if c.has_audio]
    val = [c for c in every if args.validate and fnmatch.fnmatch(c.name, args.validate)]
    val_names = {c.name for c in val}
    train = [c for c in every if not fnmatch.fnmatch(c.name, args.holdout) and c.name not in val_names]
    held = [c for c in every if fnmatch.fnmatch(c.name, args.holdout)]
    held += [c for c in load_dir(args.dev) if c.has_audio]
    extra = [c for d in args.extra for c in load_dir(d) if c.has_audio]
    if not 0 <= args.extra_share < 1 or (extra and args.extra_share == 0):
        raise SystemExit("error: --extra-share must be in (0, 1) with --extra, [0, 1) without")
    logger.info(
        "train %s + %d extra; validation %s; held out %s",
        [c.name for c in train],
        len(extra),
        [c.name for c in val],
        [c.name for c in held],
    )
    cfg = SyncConfig(
        crop_size=int(train[0].crops.shape[1]),
        embed=args.embed,
        width=args.width,
        gray=args.gray,
        downsample=args.downsample,
        standardize=args.standardize,
        lip_targets=3 * SyncConfig.frames if args.lip_weight > 0 else 0,
        audio_lip_targets=3 * SyncConfig.frames if args.audio_lip_weight > 0 else 0,
    )
    model = SyncNet(cfg)
    logger.info("SyncNet: %d parameters", count_params(model))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if not 0 <= args.ema < 1:
        raise SystemExit("error: --ema must be in [0, 1)")
    ema = SyncNet(cfg) if args.ema > 0 else None
    raw_path = args.out / "raw" if ema is not None else args.out
    meta = load_checkpoint(raw_path, model, opt) or load_checkpoint(args.out, model, opt)
    if ema is not None:
        ema.load_state_dict(model.state_dict())
        load_checkpoint(args.out, ema)
        ema.eval()
    shown = ema if ema is not None else model  # what is probed, saved and exported
    for g in opt.param_groups:  # a resumed run takes this invocation's settings
        g["lr"], g["weight_decay"] = args.lr, args.weight_decay
    step = int(meta["step"]) if meta else 0
    elapsed = float(meta.get("seconds", 0.0)) if meta else 0.0
    embeddings = Embeddings(model)
    net = ddp.wrap(embeddings)
    lags: dict[str, float] = {}
    if args.audio_offsets is not None:
        lags = apply_audio_offsets(train + extra, args.offset_records, args.offset_min)
        logger.info("audio read later (ms) on %d clips: %s", len(lags), {k: round(v * 1000) for k, v in lags.items()})
    weights = run_weights(train, extra, args.extra_share, cfg.frames)
    train = train + extra
    starts = [window_starts(c, cfg.frames) for c in train]
    aug = Augment() if args.augment else None
    appearance = Appearance() if args.appearance else None
    voice = Voice() if args.voice else None
    lips = [lip_targets(c) for c in train] if args.lip_weight > 0 or args.audio_lip_weight > 0 else None
    log_path = args.out / "log.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - elapsed
    step0 = step

    def lr_now() -> float:
        if args.lr_schedule == "constant":
            return float(args.lr)
        done = (step - step0) / max(1, args.steps - step0)
        if args.minutes > 0:
            left = args.minutes * 60 - elapsed
            done = max(done, (time.time() - t0 - elapsed) / max(1.0, left))
        return float(args.lr * 0.5 * (1 + np.cos(np.pi * min(1.0, done))))

    losses: list[float] = []

    best_path = args.out / "best"
    best = _best_score(best_path)

    def checkpoint() -> None:
        nonlocal best
        ev = held_out_scores(shown, held, cfg)
        off = offset_probe(shown, held)
        rec = {
            "step": step,
            "seconds": time.time() - t0,
            "train_loss": float(np.mean(losses[-100:])),
            "held_out": ev,
            "held_out_offsets": off,
        }
        vo = offset_probe(shown, val) if val else None
        if vo is not None:
            rec["validation_offsets"] = vo
        logger.info("step %d held-out %s offsets %s validation %s", step, ev, off, rec.get("validation_offsets"))
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        meta = {
            "step": step,
            "seconds": time.time() - t0,
            "config": cfg.to_dict(),
            "augment": args.augment,
            "appearance": args.appearance,
            "voice": args.voice,
            "audio_offsets": str(args.audio_offsets) if args.audio_offsets else None,
            "offset_min": args.offset_min,
            "audio_lags": lags,
            "lip_weight": args.lip_weight,
            "audio_lip_weight": args.audio_lip_weight,
            "lr": args.lr,
            "lr_schedule": args.lr_schedule,
            "weight_decay": args.weight_decay,
            "ema": args.ema,
            "train": [c.name for c in train],
            "held_out": [c.name for c in held],
            "held_out_scores": ev,
            "held_out_offsets": off,
            "extra": [str(d) for d in args.extra],
            "extra_share": args.extra_share if extra else 0.0,
            "validation": [c.name for c in val],
        }
        if vo is not None:
            meta["validation_offsets"] = vo
        if ema is not None:
            save_checkpoint(raw_path, model, opt, meta)
        save_checkpoint(args.out, shown, opt, meta)
        if args.keep:
            save_checkpoint(args.out / "steps" / str(step), shown, opt, meta)
        if vo is not None:
            score = (float(vo["within_1"]), float(vo["exact"]))
            if best is None or score > best:
                best = score
                save_checkpoint(best_path, shown, opt, meta)
                logger.info("step %d: best on validation so far %s", step, score)

    model.train()
    while step < args.steps:
        runs = max(1, args.batch // args.run_length)
        v, m, lt = sample_runs(train, starts, weights, runs, args.run_length, cfg, rng, aug, appearance, voice, lips)
        ve, ae, lp, alp = net(v, m)
        bce, ce = dense_losses(ve, ae, runs, cfg.eps, args.tau)
        loss = bce + args.ce_weight * ce
        if lp is not None:
            lip = nn.functional.mse_loss(lp, lt)
            loss = loss + args.lip_weight * lip
        if alp is not None:
            alip = nn.functional.mse_loss(alp, lt)
            loss = loss + args.audio_lip_weight * alip
        for g in opt.param_groups:
            g["lr"] = lr_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            ema_update(ema, model, args.ema)
        step += 1
        losses.append(bce.item())
        if step % 50 == 0:
            logger.info(
                "step %d bce %.4f ce %.3f lip %.3f audio-lip %.3f lr %.1e (%.0fs)",
                step,
                np.mean(losses[-50:]),
                ce.item(),
                lip.item() if lp is not None else float("nan"),
                alip.item() if alp is not None else float("nan"),
                opt.param_groups[0]["lr"],
                time.time() - t0,
            )
        out_of_time = args.minutes > 0 and ddp.any(time.time() - t0 > args.minutes * 60)
        if ddp.is_main and (step % args.save_every == 0 or step == args.steps or out_of_time):
            checkpoint()
        if out_of_time:
            logger.info("time budget reached at step %d", step)
            break
    ddp.finish(embeddings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
