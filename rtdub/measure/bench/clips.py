"""The media the bench runs on: generated talking-head clips and speech, and the folder of
real clips.

Stage latency and throughput run on a generated clip (the astronaut portrait under head
motion, espeak speech), so they need no real media and measure the same input on every
machine. Throughput's shared-clip run, lookahead and quality need real talking-head clips with
their own audio, found in ``BenchConfig.clips``; without them those parts are skipped with the
reason, never estimated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...defaults import MEDIA_ENV

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".webm", ".avi")
FPS = 25.0
FACE_HEIGHT = 0.36  # forehead-to-chin share of the frame height in the generated clips, as in a video call
# a paragraph with few pauses, so nearly every frame runs the audio-to-lip stage
LATENCY_TEXT = (
    "We measure every stage of the dubbing engine on every frame, while the speaker keeps talking "
    "about the weather, the trains, the budget and the plans for the coming summer holidays"
)


def talking_head_frames(width: int, height: int, n: int, fps: float = FPS, seed: int = 0) -> Iterator[np.ndarray]:
    """The astronaut portrait fitted to the frame height, centred, with the sides filled by a
    blurred continuation of its edges, under gentle head motion: a webcam-like frame whose face
    is about a third of the frame height."""
    import cv2

    from .. import samples

    img = samples.portrait()
    # the face (forehead to chin) spans about 21% of the 512x512 portrait; scale it to FACE_HEIGHT
    side = int(round(min(height, width) * FACE_HEIGHT / 0.21))
    fg = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if side < img.shape[0] else cv2.INTER_LINEAR)
    s = side / img.shape[0]
    fx, fy = 230.0 * s, 130.0 * s  # the face centre in skimage's 512x512 astronaut
    # place the face centre at half the width and 42% of the height; fill what the portrait
    # does not cover with a blurred continuation of its edges
    x0 = int(round(fx - width / 2))
    y0 = int(round(fy - 0.42 * height))
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x0 + width - side), max(0, y0 + height - side)
    big = cv2.copyMakeBorder(fg, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    if pad_l or pad_r or pad_t or pad_b:
        blur = cv2.GaussianBlur(big, (0, 0), sigmaX=max(2.0, width / 60))
        keep = np.zeros(big.shape[:2], bool)
        keep[pad_t : pad_t + side, pad_l : pad_l + side] = True
        big[~keep] = blur[~keep]
    x0 += pad_l
    y0 += pad_t
    frame = np.ascontiguousarray(big[y0 : y0 + height, x0 : x0 + width])
    centre = (fx + pad_l - x0, fy + pad_t - y0)
    yield from samples.head_motion(frame, n, fps, seed=seed, centre=centre)


def speech_track(seconds: float, text: str = LATENCY_TEXT) -> np.ndarray:
    """TTS speech (16 kHz) repeated with short pauses to exactly ``seconds``."""
    from ... import audio, tts

    sr = audio.SAMPLE_RATE
    sp = tts.synthesize(text, voice="en-us", rate=170).resampled(sr).samples
    unit = np.concatenate([sp, np.zeros(int(0.15 * sr), np.float32)])
    n = int(round(seconds * sr))
    reps = max(1, math.ceil(n / unit.size))
    return np.tile(unit, reps)[:n].astype(np.float32)


def write_talking_clip(path: Path, width: int, height: int, n_frames: int, fps: float = FPS) -> Path:
    """``n_frames`` of :func:`talking_head_frames` as an H.264 clip at ``path``."""
    from .. import samples

    return samples.write_clip(path, talking_head_frames(width, height, n_frames, fps), fps)


def find_clips(folder: Path | None) -> list[Path]:
    """Video files in ``folder`` that have an audio stream, sorted by name (none without a folder)."""
    if folder is None or not folder.is_dir():
        return []
    import av

    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in VIDEO_EXTS or not p.is_file():
            continue
        try:
            with av.open(str(p)) as c:
                if c.streams.audio and c.streams.video:
                    out.append(p)
        except (av.error.FFmpegError, OSError):
            continue
    return out


def no_clips_reason(folder: Path | None) -> str:
    """Why a section found no real clips: none in ``folder``, or no folder named at all."""
    if folder is None:
        return f"no clips folder: set {MEDIA_ENV} (clips/ under it) or pass --clips"
    return f"no clips with audio in {folder}"
