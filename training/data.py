"""Loading prepared shards (training/prepare.py), their lip-unit basis and sampling training batches."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdub import audio
from rtdub.face.lipunits import LipBasis, UnitStats, lip_points
from rtdub.render.blend import face_mask

logger = logging.getLogger(__name__)


@dataclass
class Clip:
    name: str
    crops: np.ndarray  # (N, S, S, 3) uint8
    lips: np.ndarray  # (N, 40, 2) canonical
    times: np.ndarray  # (N,)
    valid: np.ndarray  # (N,) bool
    mel: np.ndarray  # (T, 80)
    wav: np.ndarray
    fps: float
    raw_units: np.ndarray | None = None  # (N, U)
    units: np.ndarray | None = None  # (N, U) z-scored per clip
    stats: UnitStats | None = None
    # seconds by which the clip's sound lags its picture (measured, e.g. by
    # training.offset_check): the audio of the frame at t is read at t + audio_lag
    audio_lag: float = 0.0

    @property
    def real(self) -> bool:
        return not self.name.startswith("generated")

    @property
    def has_audio(self) -> bool:
        return self.wav.size > 0


def identity(name: str) -> str:
    """real_Obama_clip2 -> Obama, real_andrew_clip_1 -> andrew, real_social_d10 -> social_d10."""
    stem = name.removeprefix("real_")
    for sep in ("_clip", "_short"):
        stem = stem.split(sep)[0]
    return stem


def synth_name(face: str, source: str) -> str:
    """Name of the synthetic clip (training/synth_talk.py) of portrait ``face`` driven by ``source``."""
    return f"synth_{face}__{source}"


def driving_clip(name: str) -> str:
    """The clip that drove synthetic clip ``name`` (:func:`synth_name`); ``name`` itself otherwise."""
    return name.split("__", 1)[1] if name.startswith("synth_") and "__" in name else name


def load_clip(path: Path) -> Clip:
    z = np.load(path)
    canon = z["canon"]
    lips = np.stack([lip_points(c) for c in canon]) if len(canon) else np.zeros((0, 40, 2))
    return Clip(
        name=path.stem,
        crops=z["crops"],
        lips=lips.astype(np.float32),
        times=z["times"],
        valid=z["valid"] & np.isfinite(lips).all(axis=(1, 2)),
        mel=audio.melspectrogram(audio.normalize_loudness(z["wav"]))
        if z["wav"].size
        else np.zeros((0, audio.N_MELS), np.float32),
        wav=z["wav"],
        fps=float(z["fps"]),
    )


def load_dir(path: Path, pattern: str = "*.npz") -> list[Clip]:
    clips = [load_clip(p) for p in sorted(Path(path).glob(pattern)) if not p.name.endswith(".part.npz")]
    if not clips:
        raise FileNotFoundError(f"{path}: no prepared shards (run python -m training.prepare)")
    return clips


def attach_units(clips: list[Clip], basis: LipBasis) -> None:
    """Compute raw units and per-clip z-scored units in place."""
    for c in clips:
        raw = np.zeros((len(c.lips), basis.n_units), np.float32)
        if c.valid.any():
            raw[c.valid] = basis.raw_units(c.lips[c.valid])
            c.stats = UnitStats.fit(raw[c.valid])
            c.units = c.stats.normalize(raw)
            c.units[~c.valid] = 0
        else:
            c.units = raw
        c.raw_units = raw


def fit_basis(clips: list[Clip], n_components: int = 8) -> LipBasis:
    lips = np.concatenate([c.lips[c.valid] for c in clips])
    return LipBasis.fit(lips, n_components)


def load_basis(run: Path) -> LipBasis:
    """The unit basis of a training run (units.json) or of a model bundle (manifest.json)."""
    if (run / "units.json").is_file():
        d = json.loads((run / "units.json").read_text())
    else:
        d = json.loads((run / "manifest.json").read_text())["units"]
    return LipBasis(np.asarray(d["basis_mean"], np.float32), np.asarray(d["basis_components"], np.float32))


def closed_units(clips: list[Clip], quantile: float = 0.1) -> np.ndarray:
    """Mean z-units of each clip's most closed frames (lowest inner gap), averaged over clips."""
    out = []
    for c in clips:
        assert c.units is not None and c.raw_units is not None
        gap = c.raw_units[c.valid, -1]
        sel = gap <= np.quantile(gap, quantile)
        out.append(c.units[c.valid][sel].mean(0))
    return np.mean(out, axis=0).astype(np.float32)


def mel_windows(clip: Clip, idx: np.ndarray, lookahead: np.ndarray, window: int) -> np.ndarray:
    """(B, window, 80) mel windows for frames ``idx`` with per-sample lookahead (s)."""
    out = np.empty((len(idx), window, audio.N_MELS), np.float32)
    for k, (i, la) in enumerate(zip(idx, lookahead, strict=True)):
        out[k] = audio.mel_window(clip.mel, float(clip.times[i]), float(la), window)
    return out


def window_starts(clip: Clip, frames: int) -> np.ndarray:
    """Frames i such that i..i+frames-1 all have a face."""
    v = clip.valid.astype(np.int64)
    run = np.convolve(v, np.ones(frames, np.int64), mode="valid")
    return np.nonzero(run == frames)[0]


def context_units(clip: Clip, i: int, context: int) -> np.ndarray:
    """Units of frames i-context+1..i, repeating the first frame at the clip start."""
    assert clip.units is not None
    j = np.clip(np.arange(i - context + 1, i + 1), 0, None)
    return clip.units[j]


def reference_index(clip: Clip, i: int, rng: np.random.Generator, min_gap_s: float = 1.0) -> int:
    """A random valid frame at least ``min_gap_s`` away from ``i`` (docs/design.md §5)."""
    far = np.nonzero(clip.valid & (np.abs(clip.times - clip.times[i]) >= min_gap_s))[0]
    if far.size == 0:
        far = np.nonzero(clip.valid)[0]
    return int(rng.choice(far))


def hidden_mask(size: int) -> np.ndarray:
    return face_mask(size).hidden


# --- measured audio offsets (training.offset_check --json) ------------------------------------


@dataclass(frozen=True)
class OffsetReading:
    clip: str
    shift: int  # frames the clip's audio lags its picture (training.offset_check's sign)
    decided: bool


def offset_records(data: object) -> list[OffsetReading]:
    """training.offset_check's ``--json`` output (a list of per-clip records) as readings;
    ValueError for anything else."""
    if not isinstance(data, list):
        raise ValueError("not a list of training.offset_check readings")
    try:
        return [OffsetReading(str(r["clip"]), int(r["shift"]), bool(r["decided"])) for r in data]
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"a reading without clip, shift and decided ({exc!r})") from None


def apply_audio_offsets(clips: list[Clip], readings: list[OffsetReading], min_shift: int) -> dict[str, float]:
    """Set ``audio_lag`` on the clips that training.offset_check (``--json``) found off by
    at least ``min_shift`` frames (decided readings only; smaller readings are within its own
    precision). A synthetic clip (``data.synth_name``) takes the reading of the clip that
    drove it (training.synth_talk keeps that clip's audio and frame times). Returns the lags
    set, in seconds, by clip name."""
    shift = {r.clip: r.shift for r in readings if r.decided and abs(r.shift) >= min_shift}
    out = {}
    for c in clips:
        k = shift.get(driving_clip(c.name))
        if k is not None:
            c.audio_lag = k / c.fps
            out[c.name] = c.audio_lag
    return out
