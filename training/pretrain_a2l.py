"""Pretrain the audio encoder of the audio-to-lip stage, then fine-tune with train_a2l --init.

    python -m training.pretrain_a2l --task phones --tts data2/tts --out runs/pre_phones
    python -m training.pretrain_a2l --task masked --arch cals --tts data2/tts --data data2/train --out runs/pre_cals

``phones``: framewise classification on the TTS shards of training.tts_data (and on real
speech labelled by training.asr_phones: ``--tts`` is repeatable). The input is
the same mel window the audio-to-lip model sees (ending ``lookahead`` after the frame,
lookahead drawn from [0, max_lookahead]); the targets are the visual class of the phoneme
sounding at the frame (VISEME_CLASSES: pause, bilabial closure, open vowel, rounded, ...)
and the phoneme itself (the ``--phones`` most frequent espeak mnemonics, the rest pooled).
The model is an audio-to-lip model whose output layer has one logit per class and phoneme,
so every other weight transfers to train_a2l (``--init RUN``).

``masked`` (causal context-aware encoder, ``--arch cals``): masked prediction on all the
audio there is, the TTS shards plus the real training audio (the held-out identity and the
dev clips are left out). Spans of the input are replaced by a learned mask vector and the
causal encoder predicts the clean log-mel of every masked step from the context before it.

The last shard of the first ``--tts`` directory is held out; the log reports its accuracy
(or masked loss).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rtdub import audio

from .common import load_checkpoint, save_checkpoint, setup
from .data import load_dir
from .models import A2LConfig, ContextA2L, build_a2l
from .phones import VISEME_CLASSES, TtsShard, load_shards

logger = logging.getLogger("training.pretrain_a2l")


def phone_vocab(shards: list[TtsShard], n: int) -> list[str]:
    c: Counter[str] = Counter()
    for s in shards:
        ids, counts = np.unique(s.phone, return_counts=True)
        for i, k in zip(ids, counts, strict=True):
            c[s.symbols[int(i)]] += int(k)
    return [sym for sym, _ in c.most_common(n)]


def windows(mel: np.ndarray, centres: np.ndarray, la: np.ndarray, window: int) -> np.ndarray:
    """(B, window, 80) mel windows ending ``la`` seconds after mel frames ``centres``."""
    out = np.empty((len(centres), window, audio.N_MELS), np.float32)
    for k, (m, a) in enumerate(zip(centres, la, strict=True)):
        out[k] = audio.mel_window(mel, float(m) / audio.MEL_FPS, float(a), window)
    return out


class PhoneTask:
    def __init__(self, shards: list[TtsShard], n_phones: int) -> None:
        self.vocab = phone_vocab(shards, n_phones)
        index = {s: i for i, s in enumerate(self.vocab)}
        self.n_out = len(VISEME_CLASSES) + len(self.vocab) + 1
        self.cls = [s.classes() for s in shards]
        self.ph = []
        for s in shards:
            table = np.array([index.get(sym, len(self.vocab)) for sym in s.symbols], np.int64)
            self.ph.append(table[s.phone])

    def batch(
        self, shards: list[TtsShard], which: list[int], rng: np.random.Generator, n: int, window: int, max_la: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mels, las, cl, ph = [], [], [], []
        for k in rng.choice(which, size=n):
            m = int(rng.integers(len(self.cls[k])))
            la = float(rng.uniform(0, max_la))
            mels.append(audio.mel_window(shards[k].mel, m / audio.MEL_FPS, la, window))
            las.append(la)
            cl.append(self.cls[k][m])
            ph.append(self.ph[k][m])
        return (
            torch.from_numpy(np.stack(mels)),
            torch.tensor(las, dtype=torch.float32)[:, None],
            torch.tensor(cl),
            torch.tensor(ph),
        )

    def loss(self, logits: torch.Tensor, cl: torch.Tensor, ph: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        nc = len(VISEME_CLASSES)
        lc, lp = logits[:, :nc], logits[:, nc:]
        loss = F.cross_entropy(lc, cl) + 0.5 * F.cross_entropy(lp, ph)
        acc_c = float((lc.argmax(1) == cl).float().mean())
        acc_p = float((lp.argmax(1) == ph).float().mean())
        return loss, acc_c, acc_p


def all_audio_mels(args: argparse.Namespace, shards: list[TtsShard]) -> list[np.ndarray]:
    mels = [s.mel for s in shards]
    if args.data is not None:
        for c in load_dir(args.data):
            if c.has_audio and not (args.holdout and fnmatch.fnmatch(c.name, args.holdout)):
                mels.append(c.mel)
    return mels


def masked_batch(
    mels: list[np.ndarray], rng: np.random.Generator, n: int, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows (B, window, 80) and a mask over the model's time steps (B, steps)."""
    w = np.empty((n, window, audio.N_MELS), np.float32)
    lens = np.array([len(m) for m in mels], np.float64)
    for k, i in enumerate(rng.choice(len(mels), size=n, p=lens / lens.sum())):
        m = mels[i]
        s = int(rng.integers(0, max(1, len(m) - window)))
        w[k] = audio.mel_window(m, (s + window) / audio.MEL_FPS, 0.0, window)
    return torch.from_numpy(w), torch.zeros(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="pretrain the audio-to-lip encoder")
    p.add_argument("--task", choices=("phones", "masked"), default="phones")
    p.add_argument("--arch", choices=("conv", "cals"), default="conv")
    p.add_argument(
        "--tts",
        type=Path,
        action="append",
        help="phone-labelled shards: TTS (training.tts_data) or recognised real speech (training.asr_phones); "
        "repeatable, default data2/tts",
    )
    p.add_argument("--data", type=Path, help="real training shards (masked task: their audio)")
    p.add_argument("--holdout", default="*feifeili*", help="training clips left out (glob)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--phones", type=int, default=48, help="phoneme vocabulary (most frequent mnemonics)")
    p.add_argument("--mask-prob", type=float, default=0.08, help="masked task: span starts per step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-every", type=int, default=500)
    args = p.parse_args(argv)
    rng = setup(args.seed, args.threads)
    dirs = args.tts or [Path("data2/tts")]
    try:
        groups = [load_shards(d) for d in dirs]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(groups[0]) < 2:
        print(f"error: {dirs[0]}: need at least 2 shards (the last is held out)", file=sys.stderr)
        return 2
    # the first directory's last shard is held out; the others are all trained on
    shards = groups[0][:-1] + [s for g in groups[1:] for s in g] + groups[0][-1:]
    train_idx, val_idx = list(range(len(shards) - 1)), [len(shards) - 1]
    base = A2LConfig.for_arch(args.arch)
    vrng = np.random.default_rng(12345)
    if args.task == "phones":
        task = PhoneTask(shards, args.phones)
        cfg = base.replace(units=task.n_out)
        model = build_a2l(cfg)
        val = task.batch(shards, val_idx, vrng, 1024, cfg.window, cfg.max_lookahead)
    else:
        cfg = base
        model = build_a2l(cfg)
        mels = all_audio_mels(args, shards[:-1])
        val_mels = [shards[-1].mel]
        if not isinstance(model, ContextA2L):
            print(f"error: --task masked needs a context encoder (--arch cals), not {args.arch}", file=sys.stderr)
            return 2
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    meta = load_checkpoint(args.out, model, opt)
    step = int(meta["step"]) if meta else 0
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, last_epoch=step - 1 if step else -1
    )
    t0 = time.time()
    hist: list[float] = []
    while step < args.steps:
        model.train()
        if args.task == "phones":
            mel, la, cl, ph = task.batch(shards, train_idx, rng, args.batch, cfg.window, cfg.max_lookahead)
            mel = mel + 0.05 * torch.randn_like(mel)
            loss, _, _ = task.loss(model(mel, la), cl, ph)
        else:
            mel, _ = masked_batch(mels, rng, args.batch, cfg.window)
            assert isinstance(model, ContextA2L)
            loss = model.masked_loss(mel, torch.Generator().manual_seed(int(rng.integers(1 << 31))), args.mask_prob)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        hist.append(loss.item())
        if step % 100 == 0:
            logger.info("step %d loss %.4f (%.1fs)", step, float(np.mean(hist[-100:])), time.time() - t0)
        if step % args.save_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                if args.task == "phones":
                    vl, ac, ap = task.loss(model(val[0], val[1]), val[2], val[3])
                    ev = {"val_loss": float(vl), "val_class_acc": ac, "val_phone_acc": ap}
                else:
                    assert isinstance(model, ContextA2L)
                    vm, _ = masked_batch(val_mels, vrng, 256, cfg.window)
                    ev = {
                        "val_masked_loss": float(
                            model.masked_loss(vm, torch.Generator().manual_seed(7), args.mask_prob)
                        )
                    }
            logger.info("step %d held-out TTS shard %s", step, ev)
            extra = {"vocab": task.vocab, "classes": list(VISEME_CLASSES)} if args.task == "phones" else {}
            save_checkpoint(
                args.out, model, opt, {"step": step, "task": args.task, "config": cfg.to_dict(), "eval": ev} | extra
            )
    (args.out / "pretrain.json").write_text(json.dumps({"task": args.task, "arch": args.arch, "steps": step}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
