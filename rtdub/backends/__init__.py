"""Inference backends for the two model stages; pick one with :func:`get_backend`."""

from __future__ import annotations

from ..exceptions import BackendUnavailable
from ..model import ModelBundle
from .base import Backend, BackendConfig

BACKENDS = ("onnx", "tensorrt")
# every name get_backend accepts -> the backend it makes
BACKEND_NAMES = {"onnx": "onnx", "onnxruntime": "onnx", "cpu": "onnx", "tensorrt": "tensorrt", "trt": "tensorrt"}


def get_backend(name: str, bundle: ModelBundle, config: BackendConfig | None = None) -> Backend:
    """Create a configured backend for ``bundle``; ``name`` is one of :data:`BACKENDS`."""
    config = config or BackendConfig()
    kind = BACKEND_NAMES.get(name)
    if kind == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend(bundle, config)
    if kind == "tensorrt":
        from .tensorrt import TensorRTBackend  # type: ignore[import-not-found,unused-ignore]

        return TensorRTBackend(bundle, config)  # type: ignore[no-any-return,unused-ignore]
    raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "BACKEND_NAMES", "Backend", "BackendConfig", "get_backend"]
