"""Held-out AV-offset probe for the lip-sync expert during training.

The quantity the expert is for, measured cheaply enough to log at every checkpoint: each
held-out clip is cut into ``segment``-frame segments; for each audio delay d in
−max_delay…+max_delay frames the AV offset is found with rtdub.measure.avsync.lse (syncnet_python's
formulas: argmin of the mean distance over the segment, zero-padded, ±15 offsets) and
compared with −d. Unlike training/eval_sync.py (the reference measurement, through the
exported ONNX bundle) the audio embeddings of a constant-frame-rate clip are computed once
on its time grid and shifted by whole frames, so a delay costs no extra forward pass; a
variable-frame-rate clip (frame intervals off by more than 1 ms) gets one pass per delay.
"""

from __future__ import annotations

import numpy as np
import torch

from rtdub import audio
from rtdub.measure.avsync import lse, video_input

from .data import Clip
from .syncnet import SyncNet


@torch.no_grad()
def clip_offsets(
    model: SyncNet, clip: Clip, segment: int = 100, max_delay: int = 10, batch: int = 128
) -> list[tuple[int, int]]:
    """(truth, found) AV offsets for every (segment, delay) of one clip."""
    cfg = model.cfg
    f = cfg.frames
    n = len(clip.crops) - f + 1
    if n <= 0:
        return []
    win = np.stack([clip.crops[i : i + f] for i in range(n)])
    v = torch.cat([model.video(torch.from_numpy(video_input(win[s : s + batch]))) for s in range(0, n, batch)])
    la = cfg.mel_frames / audio.MEL_FPS

    def embed_audio(times: np.ndarray) -> np.ndarray:
        mels = np.stack([audio.mel_window(clip.mel, float(t), la, cfg.mel_frames) for t in times]).astype(np.float32)
        return torch.cat(
            [model.audio(torch.from_numpy(mels[s : s + batch])) for s in range(0, len(mels), batch)]
        ).numpy()

    times = np.asarray(clip.times[:n], np.float64)
    uniform = n < 2 or float(np.max(np.abs(np.diff(times) - 1 / clip.fps))) < 1e-3
    grid = embed_audio(float(times[0]) + np.arange(-max_delay, n + max_delay) / clip.fps) if uniform else None
    vn = v.numpy()
    out = []
    for d in range(-max_delay, max_delay + 1):
        # the audio of frame i read at t_i − d/fps (the audio track delayed by d frames)
        ad = grid[max_delay - d : max_delay - d + n] if grid is not None else embed_audio(times - d / clip.fps)
        for s0 in range(0, max(1, n - segment + 1), segment):
            sl = slice(s0, min(n, s0 + segment))
            out.append((-d, lse(vn[sl], ad[sl]).offset))
    return out


def offset_probe(model: SyncNet, clips: list[Clip], segment: int = 100, max_delay: int = 10) -> dict[str, float]:
    """Fraction of trials within ±1 frame (and exact), over all clips and per clip."""
    was = model.training
    model.eval()
    res: dict[str, float] = {}
    every: list[tuple[int, int]] = []
    for c in clips:
        t = clip_offsets(model, c, segment, max_delay)
        every += t
        res[c.name] = float(np.mean([abs(o - g) <= 1 for g, o in t])) if t else float("nan")
    model.train(was)
    err = np.array([abs(o - g) for g, o in every])
    return {"within_1": float(np.mean(err <= 1)), "exact": float(np.mean(err == 0)), "trials": len(err), **res}
