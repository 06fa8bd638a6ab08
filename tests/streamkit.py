"""Helpers shared by the streaming tests: generated frames, pipelines, loopback ICE."""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import lru_cache

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtdub import samples
from rtdub.backends.base import Backend, BackendConfig
from rtdub.backends.onnx import OnnxBackend
from rtdub.model import ModelBundle, load_bundle
from rtdub.pipeline import DubPipeline, PipelineConfig
from rtdub.streaming import warm_up
from rtdub.tracker import FaceTracker

from .factories import FACE_CENTRE


@lru_cache(maxsize=1)
def bundle() -> ModelBundle:
    return load_bundle()


@lru_cache(maxsize=4)
def portrait_frames(n: int = 50, fps: float = 25.0) -> tuple[np.ndarray, ...]:
    """The astronaut (512×512) with gentle head motion; read-only arrays."""
    frames = tuple(samples.head_motion(samples.portrait(), n, fps, centre=FACE_CENTRE))
    for f in frames:
        f.setflags(write=False)
    return frames


def onnx_backend() -> OnnxBackend:
    return OnnxBackend(bundle(), BackendConfig(threads=1))


def make_pipeline(backend: Backend | None = None, warm: bool = True) -> DubPipeline:
    pipe = DubPipeline(bundle(), backend or onnx_backend(), FaceTracker(), PipelineConfig())
    if warm:
        warm_up(pipe)
    return pipe


def mouth_mask(frame_shape: tuple[int, ...], region: object, above: float = 0.5) -> np.ndarray:
    """Bool mask of the pixels a paste region blended with a weight over ``above``."""
    m = np.zeros(frame_shape[:2], bool)
    alpha = region.alpha  # type: ignore[attr-defined]
    y0, x0 = region.y0, region.x0  # type: ignore[attr-defined]
    h, w = alpha.shape
    m[y0 : y0 + h, x0 : x0 + w] = alpha > above
    return m


BITS = 8
CELL = 16


def stamp(image: np.ndarray, index: int) -> np.ndarray:
    """Write ``index`` as BITS black/white 16×16 cells into the top-left corner."""
    out = image.copy()
    for b in range(BITS):
        out[0:CELL, b * CELL : (b + 1) * CELL] = 255 if (index >> b) & 1 else 0
    return out


def read_stamp(image: np.ndarray) -> int:
    return sum(1 << b for b in range(BITS) if image[3 : CELL - 3, b * CELL + 3 : (b + 1) * CELL - 3].mean() > 128)


class Receiver:
    """Collects decoded frames of a remote video track: (arrival, pts, rgb), and counts the
    frames of a remote audio track."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, np.ndarray]] = []
        self.audio_frames = 0
        self.task: asyncio.Task[None] | None = None
        self.audio_task: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()
        self.progress = asyncio.Event()

    def attach(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self.task = asyncio.create_task(self._run(track))
        else:
            self.audio_task = asyncio.create_task(self._count(track))

    async def _count(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
                self.audio_frames += 1
        except MediaStreamError:
            pass

    async def _run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                f = await track.recv()
                self.frames.append((time.monotonic(), int(f.pts or 0), f.to_ndarray(format="rgb24")))  # type: ignore[union-attr]
                self.progress.set()
        except MediaStreamError:
            pass
        finally:
            self.ended.set()

    async def wait_for(self, n: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while len(self.frames) < n and not self.ended.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self.progress.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.progress.wait(), left)

    async def aclose(self) -> None:
        for task in (self.task, self.audio_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
