"""Making one prepared shard from one video (a library module: training/prepare.py runs it over
a folder, rtdub enroll over a person's recordings).

Shard content (``np.savez``, read by training/data.py):
    crops    (N, S, S, 3) uint8   aligned face crops (align.py canonical frame)
    canon    (N, 468, 2)  float32 landmarks in canonical units (NaN where no face)
    times    (N,)         float64 frame times in seconds
    valid    (N,)         bool    a face was found
    wav      (M,)         float32 16 kHz mono, as recorded (training normalises it on load,
                                  so a change of the normaliser needs no new shards)
    fps      ()           float   average frame rate
    matrix   (N, 2, 3)    float32 the alignment, frame pixels -> crop pixels (zeros where no
                                  face): a crop of the same region at any size R is the frame
                                  warped by ``matrix * R / S``; ``S / scale`` is the frame
                                  pixels the crop spans (absent from shards made before)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rtdub import audio, media
from rtdub.exceptions import InputError
from rtdub.face import align
from rtdub.face.lipunits import to_canonical
from rtdub.face.tracker import FaceObservation, FaceTracker

# called once per decoded frame, in order: its index, the frame, what the tracker found
FrameHook = Callable[[int, media.Frame, FaceObservation | None], None]


def prepare_clip(src: Path, dst: Path, size: int, on_frame: FrameHook | None = None) -> dict[str, float]:
    """Process one video into one shard (written atomically); returns a few counts for the log."""
    info = media.probe_video(src)
    try:
        wav = media.load_audio(src)
    except InputError:
        wav = np.zeros(0, np.float32)
    crops, canon, times, valid, mats = [], [], [], [], []
    nan = np.full((468, 2), np.nan, np.float32)
    no_matrix = np.zeros((2, 3), np.float32)
    with FaceTracker() as tracker:
        for i, fr in enumerate(media.iter_frames(src)):
            obs = tracker.track(fr.image, fr.time)
            if on_frame is not None:
                on_frame(i, fr, obs)
            times.append(fr.time)
            if obs is None:
                crops.append(np.zeros((size, size, 3), np.uint8))
                canon.append(nan)
                valid.append(False)
                mats.append(no_matrix)
                continue
            al = align.estimate(obs.landmarks, size)
            crops.append(align.warp_to_crop(fr.image, al))
            canon.append(to_canonical(obs.landmarks).astype(np.float32))
            valid.append(True)
            mats.append(al.matrix.astype(np.float32))
    tmp = dst.with_name(dst.name + ".part.npz")
    np.savez(
        tmp,
        crops=np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
        canon=np.stack(canon) if canon else np.zeros((0, 468, 2), np.float32),
        times=np.asarray(times, np.float64),
        valid=np.asarray(valid, bool),
        wav=wav.astype(np.float32),
        fps=np.float64(info.fps),
        matrix=np.stack(mats) if mats else np.zeros((0, 2, 3), np.float32),
    )
    os.replace(tmp, dst)
    return {"frames": len(times), "faces": int(np.sum(valid)), "seconds": wav.size / audio.SAMPLE_RATE}
