"""Real generator inputs from prepared shards, for int8 calibration (onnxruntime and TensorRT)
and for int8-vs-fp32 quality checks.

A sample is what the pipeline feeds the generator (rtdub/render/pipeline.py) for one frame t of a
shard (training/prepare.py):

    pose       (B, 3, S, S)  the aligned crop of t in [0, 1], lower face hidden (zeros)
    reference  (B, 3, S, S)  a crop of the same clip at least ``min_gap_s`` away (docs/design.md §5)
    units      (B, C, U)     z-scored lip units of frames t-C+1..t, from the shard's landmarks
                             projected on the bundle's unit basis; one sample in ``closed_every``
                             gets the bundle's closed-mouth units instead (the silent-lip path).
                             Shards without landmarks get standard-normal units.

Each sample also carries the ground-truth crop of t, so quality can be measured against it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdub.face.lipunits import UnitStats, lip_points
from rtdub.model import ModelBundle
from rtdub.render.blend import face_mask

logger = logging.getLogger(__name__)

INPUT_NAMES = ("pose", "reference", "units")


@dataclass(frozen=True)
class GeneratorSample:
    pose: np.ndarray  # (B, 3, S, S) float32
    reference: np.ndarray  # (B, 3, S, S) float32
    units: np.ndarray  # (B, C, U) float32
    target: np.ndarray  # (B, S, S, 3) uint8 ground truth of the posed frames

    def feeds(self) -> dict[str, np.ndarray]:
        return {"pose": self.pose, "reference": self.reference, "units": self.units}


def list_shards(path: Path) -> list[Path]:
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.glob("*.npz") if not p.name.endswith(".part.npz"))
    if not files:
        raise FileNotFoundError(f"{path}: no prepared shards (*.npz from python -m training.prepare)")
    return files


def _clip_units(z: np.lib.npyio.NpzFile, bundle: ModelBundle, n: int, rng: np.random.Generator) -> np.ndarray:
    """(N, U) z-scored units of one shard (zeros where no face)."""
    u = bundle.n_units
    if "canon" not in z.files:
        return rng.standard_normal((n, u)).astype(np.float32)
    canon = np.asarray(z["canon"], np.float32)
    valid = np.asarray(z["valid"], bool) if "valid" in z.files else np.ones(n, bool)
    lips = np.stack([lip_points(c) for c in canon]) if n else np.zeros((0, 40, 2), np.float32)
    valid &= np.isfinite(lips).all(axis=(1, 2))
    out = np.zeros((n, u), np.float32)
    if valid.sum() >= 2:
        raw = bundle.basis.raw_units(lips[valid])
        out[valid] = UnitStats.fit(raw).normalize(raw)
    return out


def generator_samples(
    shards: list[Path],
    bundle: ModelBundle,
    count: int,
    batch: int = 1,
    seed: int = 0,
    min_gap_s: float = 1.0,
    closed_every: int = 8,
) -> list[GeneratorSample]:
    """``count`` samples of ``batch`` frames each, spread evenly over the shards' valid frames."""
    rng = np.random.default_rng(seed)
    s, ctx = bundle.crop_size, bundle.context
    hidden = face_mask(s).hidden
    per_shard = np.full(len(shards), (count * batch) // len(shards))
    per_shard[: (count * batch) % len(shards)] += 1
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # target, ref, units, gt
    for path, k in zip(shards, per_shard, strict=True):
        if k == 0:
            continue
        with np.load(path) as z:
            crops = np.asarray(z["crops"])
            n = len(crops)
            if crops.shape[1:] != (s, s, 3):
                raise ValueError(f"{path}: crops of {crops.shape[1:]}, the bundle wants ({s}, {s}, 3)")
            valid = np.asarray(z["valid"], bool) if "valid" in z.files else np.ones(n, bool)
            times = np.asarray(z["times"], np.float64) if "times" in z.files else np.arange(n) / 25.0
            units = _clip_units(z, bundle, n, rng)
        idx = np.nonzero(valid)[0]
        if idx.size == 0:
            logger.warning("shard without faces", extra={"shard": str(path)})
            continue
        for i in rng.choice(idx, size=int(k), replace=idx.size < k):
            far = idx[np.abs(times[idx] - times[i]) >= min_gap_s]
            r = int(rng.choice(far if far.size else idx))
            j = np.clip(np.arange(i - ctx + 1, i + 1), 0, None)
            u = units[j]
            if closed_every and len(frames) % closed_every == closed_every - 1:
                u = np.tile(bundle.closed_units, (ctx, 1))
            frames.append((crops[i], crops[r], u, crops[i]))
    if not frames:
        raise ValueError("no valid frames in the calibration shards")
    order = rng.permutation(len(frames))
    out = []
    for b0 in range(0, len(order) - batch + 1, batch):
        sel = [frames[k] for k in order[b0 : b0 + batch]]
        pose = np.stack([f[0] for f in sel]).astype(np.float32).transpose(0, 3, 1, 2) * np.float32(1 / 255)
        pose[:, :, hidden] = 0.0
        ref = np.stack([f[1] for f in sel]).astype(np.float32).transpose(0, 3, 1, 2) * np.float32(1 / 255)
        out.append(
            GeneratorSample(
                np.ascontiguousarray(pose),
                np.ascontiguousarray(ref),
                np.stack([f[2] for f in sel]).astype(np.float32),
                np.stack([f[3] for f in sel]),
            )
        )
    return out
