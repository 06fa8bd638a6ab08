"""Offline dubbing of a file: a talking-head video plus a dubbed audio track -> an MP4 whose
lips follow the new audio.

The output lasts as long as the dubbed audio. It runs at the video's average frame rate (a
variable-rate input is resampled by presentation time). When the video is shorter than the
audio it continues by ping-pong looping (forward, then backward), so there is never a jump.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import audio, media
from .engine import EngineConfig, build_pipeline
from .exceptions import InputError
from .face.tracker import FaceTracker
from .render.pipeline import STAGES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DubOptions:
    video: Path
    audio: Path
    output: Path
    engine: EngineConfig = field(default_factory=EngineConfig.offline)  # model, backend, threads, pipeline
    compare: Path | None = None  # also write input | output side by side here
    check_locality: bool = False  # verify that only masked pixels changed (costs a copy)


@dataclass
class DubReport:
    output: Path
    frames: int = 0
    faces: int = 0
    no_face: int = 0
    silent: int = 0
    duration: float = 0.0
    wall: float = 0.0
    fps: float = 0.0
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    pixels_changed_outside_mask: int | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.duration / self.wall if self.wall > 0 else 0.0

    def percentiles(self) -> dict[str, tuple[float, float]]:
        return {k: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for k, v in self.stage_ms.items() if v}


class LoopedFrames:
    """The source frame to show at each output time, ping-ponging past the end of the video.

    Frames are decoded once, in order. When the output may outlast the video they are also
    spooled to a temporary memory-mapped file, so the backward pass needs no re-decoding
    and the whole video is never held in RAM."""

    def __init__(self, path: Path, spool: bool) -> None:
        self._it: Iterator[media.Frame] | None = media.iter_frames(path)
        self._times: list[float] = []
        self._current: media.Frame | None = None
        self._next: media.Frame | None = None
        self._spool_dir = tempfile.TemporaryDirectory(prefix="rtdub-spool-") if spool else None
        self._spool: np.memmap | None = None
        self._cap = 0
        self._pull()
        if self._next is None:
            raise InputError(str(path), "video stream holds no frames")
        self.shape: tuple[int, ...] = self._next.image.shape

    def close(self) -> None:
        self._spool = None
        if self._spool_dir is not None:
            self._spool_dir.cleanup()

    def _store(self, fr: media.Frame) -> None:
        self._times.append(fr.time)
        if self._spool_dir is None:
            return
        n = len(self._times)
        if self._spool is None or n > self._cap:
            cap = max(256, self._cap * 2)
            new = np.memmap(
                Path(self._spool_dir.name) / f"frames{cap}.u8",
                dtype=np.uint8,
                mode="w+",
                shape=(cap, *fr.image.shape),
            )
            if self._spool is not None:
                new[: self._cap] = self._spool[: self._cap]
                old = self._spool.filename
                self._spool = None
                if old:
                    Path(old).unlink(missing_ok=True)
            self._spool, self._cap = new, cap
        self._spool[n - 1] = fr.image

    def _pull(self) -> None:
        if self._it is None:
            self._next = None
            return
        try:
            self._next = next(self._it)
            self._store(self._next)
        except StopIteration:
            self._it = None
            self._next = None

    def at(self, t: float) -> np.ndarray:
        """The frame shown at output time ``t`` (non-decreasing over calls)."""
        while self._next is not None and (self._current is None or self._next.time <= t + 1e-6):
            self._current = self._next
            self._pull()
        assert self._current is not None
        if self._next is not None or t <= self._times[-1] + 1e-6:
            return self._current.image
        if self._spool is None:  # no spool: hold the last frame
            return self._current.image
        period = self._times[-1]
        if period <= 0:
            return np.asarray(self._spool[0])
        u = math.fmod(t, 2 * period)
        if u > period:
            u = 2 * period - u
        j = int(np.searchsorted(self._times, u + 1e-6, side="right")) - 1
        return np.asarray(self._spool[max(0, j)])


def dub_file(opts: DubOptions, progress: Callable[[int, int], None] | None = None) -> DubReport:
    """Dub ``opts.video`` with ``opts.audio`` into ``opts.output``; InputError on bad input."""
    info = media.probe_video(opts.video)
    wav16 = media.load_audio(opts.audio)
    rate = media.audio_sample_rate(opts.audio)
    mux_audio = media.load_audio(opts.audio, sample_rate=rate, mono=False)
    bundle = opts.engine.load_bundle()
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(wav16)))
    duration = wav16.size / audio.SAMPLE_RATE
    fps = float(info.fps) if info.fps else 25.0
    n_out = max(1, math.ceil(duration * fps - 1e-9))
    report = DubReport(opts.output, duration=duration, fps=fps)
    report.stage_ms = {k: [] for k in ("decode", *STAGES, "encode")}
    frames = LoopedFrames(opts.video, spool=duration > info.duration - 0.5 or info.duration <= 0)
    h, w = frames.shape[:2]
    outside = 0
    t_start = time.perf_counter()
    try:
        with (
            contextlib.ExitStack() as closing,
            FaceTracker() as tracker,
            media.VideoWriter(opts.output, info.fps, w, h, mux_audio, rate) as writer,
        ):
            cmp_writer = media.VideoWriter(opts.compare, info.fps, 2 * w, h, mux_audio, rate) if opts.compare else None
            pipe = build_pipeline(opts.engine, tracker, bundle)
            closing.callback(pipe.close)
            try:
                for i in range(n_out):
                    t = i / fps
                    t0 = time.perf_counter()
                    src = frames.at(t)
                    image = src.copy()
                    report.stage_ms["decode"].append((time.perf_counter() - t0) * 1000)
                    res = pipe.process(image, t, mel)
                    for k, v in res.times.items():
                        report.stage_ms[k].append(v)
                    report.frames += 1
                    report.faces += int(res.face)
                    report.no_face += int(not res.face)
                    report.silent += int(res.silent)
                    if opts.check_locality:
                        changed = np.any(res.image != src, axis=-1)
                        if res.region is not None:
                            r = res.region
                            hh, ww = r.alpha.shape
                            changed[r.y0 : r.y0 + hh, r.x0 : r.x0 + ww] &= r.alpha <= 0
                        outside += int(changed.sum())
                    t1 = time.perf_counter()
                    writer.write(res.image)
                    if cmp_writer is not None:
                        cmp_writer.write(np.concatenate([src, res.image], axis=1))
                    report.stage_ms["encode"].append((time.perf_counter() - t1) * 1000)
                    if progress is not None:
                        progress(i + 1, n_out)
                if report.faces == 0:
                    raise InputError(str(opts.video), "no face found in any frame")
                if cmp_writer is not None:
                    cmp_writer.close()
            except BaseException:
                if cmp_writer is not None:
                    cmp_writer.abort()
                raise
    finally:
        frames.close()
    report.wall = time.perf_counter() - t_start
    if opts.check_locality:
        report.pixels_changed_outside_mask = outside
    logger.info(
        "dubbed",
        extra={
            "output": str(opts.output),
            "frames": report.frames,
            "no_face": report.no_face,
            "wall_s": report.wall,
        },
    )
    return report
