"""Sample talking-head media made from material installed packages ship: a portrait from
scikit-image's data, moved with gentle synthetic head motion. Used by ``make demo`` and by the
tests, so neither needs any external media."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .. import media


def portrait() -> np.ndarray:
    """A real photographic portrait (scikit-image's ``astronaut``, public domain), RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def head_motion(
    image: np.ndarray,
    n_frames: int,
    fps: float,
    amplitude: float = 1.0,
    seed: int = 0,
    centre: tuple[float, float] | None = None,
) -> Iterator[np.ndarray]:
    """Frames of ``image`` under slow, smooth similarity motion (sway, nod, breathing scale)."""
    h, w = image.shape[:2]
    cx, cy = centre if centre is not None else (w / 2, h / 2)
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 2 * math.pi, size=4)
    for i in range(n_frames):
        t = i / fps
        ang = amplitude * 2.5 * math.sin(2 * math.pi * 0.23 * t + ph[0])
        sc = 1 + amplitude * 0.02 * math.sin(2 * math.pi * 0.17 * t + ph[1])
        tx = amplitude * 0.012 * w * math.sin(2 * math.pi * 0.31 * t + ph[2])
        ty = amplitude * 0.008 * h * math.sin(2 * math.pi * 0.27 * t + ph[3])
        m = cv2.getRotationMatrix2D((cx, cy), ang, sc)
        m[:, 2] += (tx, ty)
        yield cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def write_clip(
    path: str | Path,
    frames: Iterator[np.ndarray] | list[np.ndarray],
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
) -> Path:
    """Encode frames (and audio) to an MP4 through the project's atomic writer."""
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with media.VideoWriter(path, Fraction(fps).limit_denominator(1001), w, h, audio, audio_rate) as wr:
        wr.write(first)
        for f in frames:
            wr.write(f)
    return Path(path)
