"""Helpers shared by the streaming tests: generated frames, pipelines, loopback ICE."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

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
