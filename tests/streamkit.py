"""Helpers shared by the streaming tests: generated frames, pipelines, loopback ICE."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtdub.backends.base import Backend, BackendConfig
from rtdub.backends.onnx import OnnxBackend
from rtdub.face.tracker import FaceTracker
from rtdub.measure import samples
from rtdub.measure.loopbench import read_stamp, stamp
from rtdub.model import ModelBundle, load_bundle
from rtdub.render.pipeline import DubPipeline, PipelineConfig
from rtdub.stream.server import DubServer, ServeConfig
from rtdub.stream.session import StreamConfig, warm_up
from rtdub.stream.webrtc import restrict_host_addresses

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


@pytest.fixture()
def loopback_only() -> Iterator[None]:
    """ICE host candidates on 127.0.0.1 only (tests never leave the machine)."""
    restrict_host_addresses(["127.0.0.1"])
    yield
    restrict_host_addresses(None)


@pytest.fixture()
async def server(loopback_only: None) -> AsyncIterator[DubServer]:
    srv = DubServer(ServeConfig(port=0, stream=StreamConfig(budget_ms=150)), make_pipeline)
    await srv.start()
    yield srv
    await srv.aclose()


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


__all__ = [
    "Receiver",
    "bundle",
    "loopback_only",
    "make_pipeline",
    "mouth_mask",
    "portrait_frames",
    "read_stamp",
    "server",
    "stamp",
]
