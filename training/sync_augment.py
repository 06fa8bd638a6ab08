"""Identity-destroying augmentation and auxiliary targets for the lip-sync expert.

With five real identities (~175 s of speech) the expert learns who is talking instead of
how the mouth moves: it finds the AV offset on every training clip and on almost no
held-out one. What does not carry sync is randomised, per run of consecutive windows (so a
run still looks like one clip):

- **appearance** (:class:`Appearance`): grayscale, brightness, contrast, per-channel gain,
  saturation, gamma, Gaussian blur, pixel noise, and random erasing of rectangles of the
  lower face that stay clear of the mouth;
- **voice** (:class:`Voice`): gain, a shift of the mel bins (a crude vocal-tract-length
  change), a raised noise floor, frequency masks and mel noise.

:func:`lip_targets` gives, per frame, the inner-lip gap, the mouth width and the outer-lip
height, z-scored per clip (identity-free mouth geometry) for the expert's auxiliary head.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rtdub import audio
from rtdub.face.lipunits import inner_gap_batch

from .data import Clip

# Where the mouth is in an aligned crop (rtdub.face.align: 43.6 px per canonical unit at S = 96,
# lips at x ±0.28, y 0.62…0.99): a box, with margin for the ±10 % shift augmentation,
# that random erasing must not touch. Fractions of the crop side.
MOUTH_BOX = (0.29, 0.48, 0.71, 0.84)  # x0, y0, x1, y1


@dataclass(frozen=True)
class Appearance:
    gray_p: float = 0.3
    brightness: float = 0.25  # ± fraction of full scale, added
    contrast: float = 0.4  # ± relative
    channel_gain: float = 0.2  # ± per channel
    saturation: tuple[float, float] = (0.3, 1.6)
    gamma: float = 0.4  # exp(±) of it
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.8)
    noise: float = 0.04  # max std, fraction of full scale
    erase_p: float = 0.6
    erase_max: int = 2  # rectangles per window


@dataclass(frozen=True)
class Voice:
    gain: float = 0.5  # ± mel units (8 units = 100 dB)
    shift_bins: int = 3  # ± mel bins
    floor_p: float = 0.3
    floor: tuple[float, float] = (-4.0, -2.5)
    mask_p: float = 0.5
    mask_bins: int = 8
    noise: float = 0.05


@dataclass(frozen=True)
class Look:
    """One draw of :class:`Appearance`, shared by every window of a run."""

    gray: bool = False
    bright: float = 0.0
    contrast: float = 1.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sat: float = 1.0
    gamma: float = 1.0
    blur: float = 0.0  # sigma, px; 0: none
    noise: float = 0.0  # std, fraction of full scale


def draw_appearance(rng: np.random.Generator, a: Appearance) -> Look:
    g = 1.0 + rng.uniform(-a.channel_gain, a.channel_gain, 3)
    return Look(
        gray=bool(rng.random() < a.gray_p),
        bright=float(rng.uniform(-a.brightness, a.brightness)),
        contrast=float(1.0 + rng.uniform(-a.contrast, a.contrast)),
        gain=(float(g[0]), float(g[1]), float(g[2])),
        sat=float(rng.uniform(*a.saturation)),
        gamma=float(np.exp(rng.uniform(-a.gamma, a.gamma))),
        blur=float(rng.uniform(*a.blur_sigma)) if rng.random() < a.blur_p else 0.0,
        noise=float(rng.uniform(0, a.noise)),
    )


def _erase(x: np.ndarray, rng: np.random.Generator, a: Appearance) -> None:
    """Fill up to ``erase_max`` rectangles of the lower half outside MOUTH_BOX (in place,
    uint8 frames)."""
    s = x.shape[1]
    bx0, by0, bx1, by1 = (int(round(f * s)) for f in MOUTH_BOX)
    for _ in range(int(rng.integers(1, a.erase_max + 1))):
        for _try in range(30):
            w, h = int(rng.integers(s // 12, s // 3)), int(rng.integers(s // 12, s // 4))
            x0, y0 = int(rng.integers(0, s - w)), int(rng.integers(s // 2, s - h))
            if x0 + w <= bx0 or x0 >= bx1 or y0 + h <= by0 or y0 >= by1:
                fill = rng.integers(0, 256, 3 if rng.random() < 0.5 else (h, w, 3), dtype=np.uint8)
                x[:, y0 : y0 + h, x0 : x0 + w] = fill
                break


_NOISE: dict[tuple[int, ...], np.ndarray] = {}  # unit Gaussian fields, drawn once per shape


def _noise_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One of 16 pre-drawn unit Gaussian fields of ``shape``, with a random sign (drawing
    fresh noise per window was the most expensive step of the sampler)."""
    if shape not in _NOISE:
        _NOISE[shape] = np.random.default_rng(0).standard_normal((16, *shape), dtype=np.float32)
    bank = _NOISE[shape]
    return bank[int(rng.integers(len(bank)))] * (1.0 if rng.random() < 0.5 else -1.0)


def apply_appearance(win: np.ndarray, p: Look, rng: np.random.Generator, a: Appearance) -> np.ndarray:
    """(F, S, S, 3) uint8 -> the same, with the run's appearance change applied to the lower
    half (the only part the expert sees; the upper half is returned unchanged)."""
    f, s = win.shape[0], win.shape[1]
    luma = np.tile(np.array([[0.299, 0.587, 0.114]], np.float32), (3, 1))
    if p.gray:
        m = luma
    else:  # saturation about the luma, then per-channel gain: one 3x3 colour matrix
        m = np.asarray(p.gain, np.float32)[:, None] * (luma + p.sat * (np.eye(3, dtype=np.float32) - luma))
    low = np.ascontiguousarray(win[:, s // 2 :]).reshape(-1, s, 3)
    low = cv2.transform(low, m)  # saturates to uint8
    lv = np.arange(256, dtype=np.float32) / 255.0  # gamma, contrast, brightness as one LUT
    lv = (lv**p.gamma - 0.5) * p.contrast + 0.5 + p.bright
    low = cv2.LUT(low, (np.clip(lv, 0, 1) * 255 + 0.5).astype(np.uint8)).reshape(f, -1, s, 3)
    if p.blur > 0:
        low = np.stack([cv2.GaussianBlur(x, (0, 0), p.blur) for x in low])
    out = win.copy()
    out[:, s // 2 :] = low
    if rng.random() < a.erase_p:
        _erase(out, rng, a)
    if p.noise > 0:
        x = out[:, s // 2 :].astype(np.float32) + _noise_field(low.shape, rng) * (255 * p.noise)
        out[:, s // 2 :] = np.clip(x, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class Sound:
    """One draw of :class:`Voice`, shared by every window of a run."""

    gain: float = 0.0
    shift: int = 0  # mel bins
    floor: float | None = None
    mask: tuple[int, int] | None = None  # mel bins [f0, f1)


def draw_voice(rng: np.random.Generator, v: Voice) -> Sound:
    mask = None
    if rng.random() < v.mask_p:
        w = int(rng.integers(1, v.mask_bins + 1))
        f0 = int(rng.integers(0, audio.N_MELS - w))
        mask = (f0, f0 + w)
    return Sound(
        gain=float(rng.uniform(-v.gain, v.gain)),
        shift=int(rng.integers(-v.shift_bins, v.shift_bins + 1)),
        floor=float(rng.uniform(*v.floor)) if rng.random() < v.floor_p else None,
        mask=mask,
    )


def apply_voice(mel: np.ndarray, p: Sound, rng: np.random.Generator, v: Voice) -> np.ndarray:
    """(T, 80) mel window (rtdub.audio scale) -> the same, with the run's voice change."""
    n = mel.shape[1]
    x = mel[:, np.clip(np.arange(n) - p.shift, 0, n - 1)] + p.gain
    if p.floor is not None:
        x = np.maximum(x, p.floor)
    if p.mask is not None:
        x[:, p.mask[0] : p.mask[1]] = x.mean()
    x = x + rng.normal(0, v.noise, x.shape)
    return np.clip(x, -audio.MAX_ABS, audio.MAX_ABS).astype(np.float32)


def lip_targets(clip: Clip) -> np.ndarray:
    """(N, 3) inner-lip gap, mouth width, outer-lip height per frame, z-scored over the
    clip's valid frames (0 where invalid). Invariant to a horizontal flip."""
    lips = clip.lips
    out = np.zeros((len(lips), 3), np.float32)
    ok = clip.valid
    if ok.sum() < 2:
        return out
    g = inner_gap_batch(lips[ok])
    w = lips[ok, :, 0].max(1) - lips[ok, :, 0].min(1)
    h = lips[ok, :, 1].max(1) - lips[ok, :, 1].min(1)
    f = np.stack([g, w, h], axis=1)
    out[ok] = (f - f.mean(0)) / np.maximum(f.std(0), 1e-6)
    return out
