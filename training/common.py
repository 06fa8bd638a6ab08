"""Shared training utilities: seeding, threads, checkpoints (safetensors), correlation."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)


def setup(seed: int, threads: int) -> np.random.Generator:
    torch.set_num_threads(max(1, threads))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return np.random.default_rng(seed)


def save_checkpoint(
    out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any]
) -> None:
    """Weights as safetensors, optimizer state with torch.save (loaded with weights_only=True),
    metadata as JSON; each file is written to a temporary name and renamed."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors.part"))
    torch.save(opt.state_dict(), out / "optim.pt.part")
    (out / "meta.json.part").write_text(json.dumps(meta, indent=1))
    for name in ("model.safetensors", "optim.pt", "meta.json"):
        os.replace(out / f"{name}.part", out / name)


def load_checkpoint(
    out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer | None = None
) -> dict[str, Any] | None:
    if not (out / "model.safetensors").exists():
        return None
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    if opt is not None and (out / "optim.pt").exists():
        opt.load_state_dict(torch.load(out / "optim.pt", weights_only=True))
    meta: dict[str, Any] = json.loads((out / "meta.json").read_text())
    return meta


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    d = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0
