"""Whether this machine can run CUDA tests: pycuda imports and can create a context.

Tests that need a GPU are decorated with :func:`requires_gpu` (which also marks them ``gpu``). To apply the check to
every ``gpu``-marked test, tests/conftest.py can re-export :func:`pytest_collection_modifyitems`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pytest

F = TypeVar("F", bound=Callable[..., Any])


@functools.lru_cache(maxsize=1)
def gpu_skip_reason() -> str | None:
    """None when a CUDA context can be created on device 0, else why not."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return "pycuda is not installed (pip install 'rtdub[gpu]')"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA device"
        ctx = cuda.Device(0).make_context()
        ctx.pop()
        ctx.detach()
    except Exception as exc:  # pycuda's driver errors: no driver, no device, busy device
        return f"cannot create a CUDA context: {exc}"
    return None


def cuda_context_ok() -> bool:
    return gpu_skip_reason() is None


def requires_gpu(fn: F) -> F:
    """Mark a test ``gpu`` and skip it at run time (not at import) when there is no GPU."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        reason = gpu_skip_reason()
        if reason is not None:
            pytest.skip(f"needs a CUDA GPU: {reason}")
        return fn(*args, **kwargs)

    return cast(F, pytest.mark.gpu(wrapper))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every ``gpu``-marked test when no CUDA context can be created."""
    reason = gpu_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
