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


def _optim_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, sc in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_checkpoint(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Weights and optimizer tensors as safetensors, everything else as JSON: nothing is
    pickled. Each file is written to a temporary name and renamed."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors.part"))
    opt_tensors, opt_meta = _optim_to_flat(opt)
    save_file(opt_tensors, str(out / "optim.safetensors.part"))
    (out / "optim.json.part").write_text(json.dumps(opt_meta))
    (out / "meta.json.part").write_text(json.dumps(meta, indent=1))
    for name in ("model.safetensors", "optim.safetensors", "optim.json", "meta.json"):
        os.replace(out / f"{name}.part", out / name)


def load_checkpoint(
    out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer | None = None
) -> dict[str, Any] | None:
    if not (out / "model.safetensors").exists():
        return None
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    if opt is not None and (out / "optim.safetensors").exists():
        flat = load_file(str(out / "optim.safetensors"))
        opt.load_state_dict(_optim_from_flat(flat, json.loads((out / "optim.json").read_text())))
    meta: dict[str, Any] = json.loads((out / "meta.json").read_text())
    return meta


def cosine_lr(opt: torch.optim.Optimizer, base: float, step: int, total: int) -> float:
    """Set every parameter group's learning rate to the cosine schedule at ``step`` of ``total``."""
    lr = float(base * 0.5 * (1 + np.cos(np.pi * step / max(1, total))))
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    d = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation, NaN where it is undefined (fewer than 3 values or no spread)."""
    if len(a) < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def articulation(pred: np.ndarray, truth: np.ndarray, max_gain: float) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the gain that gives the fitted map's output the spread of the real units
    (std ratio, between 1 and ``max_gain``) and the centre it scales about (the output mean):
    least squares on noisy labels shrinks the map toward the mean, and lips that barely move
    read as mumbling."""
    centre = pred.mean(0)
    gain = np.clip(truth.std(0) / np.maximum(pred.std(0), 1e-6), 1.0, max_gain)
    return gain.astype(np.float32), centre.astype(np.float32)
