"""A trained audio-to-lip run read back: its model and its predictions over a whole signal.

training.train_a2l writes a run (``meta.json`` with the config, the safetensors checkpoint);
besides its own evaluation and distillation, training.offset_check (a second opinion on a
clip's AV offset) and training.a2l_report (ONNX speed) read runs back, so these helpers live
here rather than in the training script. The run's unit basis is read by
``training.data.load_basis``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rtdub import audio

from .common import load_checkpoint
from .models import A2LConfig, build_a2l


def predict_mel(
    model: torch.nn.Module, mel: np.ndarray, times: np.ndarray, lookahead: float, batch: int = 512
) -> np.ndarray:
    """Units at each time (s) of a whole-signal mel, with the given lookahead."""
    model.eval()
    cfg: A2LConfig = model.cfg  # type: ignore[assignment]
    la_in = cfg.input_lookahead(lookahead)
    outs = []
    with torch.no_grad():
        for s in range(0, len(times), batch):
            ts = times[s : s + batch]
            w = np.stack([audio.mel_window(mel, float(t), la_in, cfg.window) for t in ts])
            la = torch.full((len(ts), 1), lookahead)
            outs.append(model(torch.from_numpy(w), la).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, cfg.units), np.float32)


def load_run(run: Path) -> torch.nn.Module:
    """The model of a train_a2l run (config from meta.json), in eval mode; exits when the run
    has no checkpoint."""
    cfg = A2LConfig(**json.loads((run / "meta.json").read_text())["config"])
    model = build_a2l(cfg)
    if load_checkpoint(run, model) is None:
        raise SystemExit(f"error: {run}: no checkpoint")
    return model.eval()
