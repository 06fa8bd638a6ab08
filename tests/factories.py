"""Media factories for the tests: everything is generated, nothing comes from ../shared."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from rtdub import media
from rtdub.face.lipunits import GAP_PAIRS
from rtdub.measure import samples

if TYPE_CHECKING:
    from training.models import LipToFace

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
    return media.write_wav(path, wav, sr)


def faceless_clip(path: Path, seconds: float = 1.0, fps: float = 25) -> Path:
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([(xx + 4 * i) % 256, (yy * 2) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
        for i in range(int(seconds * fps))
    ]
    return samples.write_clip(path, frames, fps, speechlike(seconds), 16000)


def vfr_clip(path: Path, n_frames: int = 30) -> Path:
    """H.264 in Matroska with frames alternately 50 ms and 30 ms apart (40 ms on average)."""
    frames = samples.head_motion(samples.portrait(), n_frames, 25.0)
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        s: av.VideoStream = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 512, 512, "yuv420p"
        s.codec_context.time_base = tb
        t = 0
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, tb
            t += 30 if i % 2 else 50
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def stereo_aac(path: Path, wav16k: np.ndarray, rate: int) -> Path:
    """(2, n) 16 kHz samples, resampled to ``rate``, as stereo AAC in an MP4 container."""
    from scipy.signal import resample_poly

    st = resample_poly(wav16k, rate // 100, 160, axis=1).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as c:
        a: av.AudioStream = c.add_stream("aac", rate=rate)
        a.layout = "stereo"
        for s0 in range(0, st.shape[1], 1024):
            part = np.ascontiguousarray(st[:, s0 : s0 + 1024])
            part = np.pad(part, ((0, 0), (0, 1024 - part.shape[1])))
            fr = av.AudioFrame.from_ndarray(part, format="fltp", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = rate, s0, Fraction(1, rate)
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    return path


def random_generator(bias_std: float = 0.3) -> LipToFace:
    """A small seeded LipToFace (training.models; needs torch) whose head and FiLM layers,
    zero at initialisation, are randomised so that the output depends on every input and
    its flow, mixing weight and colour vary over the crop."""
    import torch

    from training.models import GenConfig, LipToFace

    torch.manual_seed(0)
    gen = LipToFace(GenConfig(base=8)).eval()
    for f in gen.film.modules():
        if isinstance(f, torch.nn.Linear):
            torch.nn.init.normal_(f.weight, 0, 0.05)
    torch.nn.init.normal_(gen.head.weight, 0, 0.3)
    assert gen.head.bias is not None
    torch.nn.init.normal_(gen.head.bias, 0, bias_std)
    return gen


def prepared_shard(path: Path, seconds: float, seed: int, fps: float = 25.0) -> None:
    """A prepared shard (training/prepare.py's format) made directly: a textured 96 px crop
    whose lower half moves with the audio envelope, and random canonical landmarks whose
    lower lip follows the same envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    wav = speechlike(seconds, seed=seed)
    times = np.arange(n) / fps
    env = np.array([np.sqrt(np.mean(wav[int(t * 16000) : int((t + 0.04) * 16000)] ** 2)) for t in times])
    env = env / max(env.max(), 1e-6)
    base = rng.uniform(50, 200, size=(96, 96, 3))
    crops = np.empty((n, 96, 96, 3), np.uint8)
    for i in range(n):
        img = base.copy()
        open_px = int(4 + 14 * env[i])
        img[60 : 60 + open_px, 30:66] = 20  # the "mouth"
        crops[i] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    canon = np.repeat(rng.normal(0, 0.3, size=(1, 468, 2)), n, axis=0).astype(np.float32)
    canon += rng.normal(0, 0.005, size=canon.shape).astype(np.float32)
    canon[:, GAP_PAIRS[:, 1], 1] = canon[:, GAP_PAIRS[:, 0], 1] + 0.2 * env[:, None].astype(np.float32)
    np.savez(
        path,
        crops=crops,
        canon=canon,
        times=times,
        valid=np.ones(n, bool),
        wav=wav,
        fps=np.float64(fps),
    )
