"""Media factories for the tests: everything is generated, nothing comes from ../shared."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rtdub import samples

FACE_CENTRE = (230.0, 130.0)  # the astronaut's face in skimage's 512×512 image


def speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Syllable-rate amplitude-modulated harmonic signal with pauses (no TTS needed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    env *= (np.sin(2 * np.pi * 0.5 * t) > -0.6).astype(float)  # pauses
    x = 0.3 * env * sig / 3 + 0.003 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def talking_clip(
    path: Path, seconds: float = 2.0, fps: float = 25, audio: np.ndarray | None = None, size: int = 512
) -> Path:
    img = samples.portrait()
    if size != 512:
        import cv2

        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    n = int(round(seconds * fps))
    frames = list(samples.head_motion(img, n, fps))
    return samples.write_clip(path, frames, fps, audio, 16000)


def write_wav(path: Path, wav: np.ndarray, sr: int = 16000) -> Path:
    """Mono 16-bit WAV through PyAV."""
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)[None]
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=sr)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        f.sample_rate = sr
        f.pts = 0
        f.time_base = Fraction(1, sr)
        for p in s.encode(f):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def faceless_clip(path: Path, seconds: float = 1.0, fps: float = 25) -> Path:
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([(xx + 4 * i) % 256, (yy * 2) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
        for i in range(int(seconds * fps))
    ]
    return samples.write_clip(path, frames, fps, speechlike(seconds), 16000)
