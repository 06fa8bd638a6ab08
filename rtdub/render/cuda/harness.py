"""The CUDA kernel's per-pixel math on the CPU: harness.cpp built with g++, loaded with ctypes.

    lib = build_harness(Path("/tmp/rtdub-harness"))
    blender = HarnessBlender(face_mask(96), lib)
    blender.paste_rgb(frame, crop, alignment, offset)

Same API and same results as :class:`rtdub.render.cuda.CudaBlender`, without CUDA: the tests use it
to compare blend_math.h with :func:`rtdub.render.blend.paste`.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ...exceptions import BackendUnavailable
from ..blend import FaceMask
from . import CUDA_DIR, Blender
from .plan import Box

logger = logging.getLogger(__name__)

HARNESS_SOURCES = (CUDA_DIR / "harness.cpp", CUDA_DIR / "blend_math.h")
CXXFLAGS = ("-O2", "-std=c++14", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC")

_u8p = ctypes.POINTER(ctypes.c_uint8)
_dp = ctypes.POINTER(ctypes.c_double)
_fp = ctypes.POINTER(ctypes.c_float)
_i = ctypes.c_int
_vp = ctypes.c_void_p


def build_harness(out_dir: Path, compiler: str | None = None) -> Path:
    """Compile harness.cpp into ``out_dir`` (once per source version); returns the library path."""
    cxx = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise BackendUnavailable(f"no C++ compiler ({cxx}) to build the blend harness: apt-get install g++")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in HARNESS_SOURCES) + " ".join(CXXFLAGS).encode())
    lib = Path(out_dir) / f"librtdub_blend_harness_{digest.hexdigest()[:12]}.so"
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_name(lib.name + f".{os.getpid()}.part")
    cmd = [cxx, *CXXFLAGS, "-I", str(CUDA_DIR), str(HARNESS_SOURCES[0]), "-o", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BackendUnavailable(f"building the blend harness failed: {' '.join(cmd)}\n{res.stderr.strip()}")
    os.replace(tmp, lib)
    logger.info("built blend harness", extra={"path": str(lib)})
    return lib


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


class HarnessBlender(Blender):
    """:class:`rtdub.render.cuda.Blender` running blend_math.h on the CPU (one loop step per CUDA thread)."""

    def __init__(self, mask: FaceMask, library: Path) -> None:
        super().__init__(mask)
        lib = ctypes.CDLL(str(library))
        if lib.rtdub_harness_abi() != 1:
            raise BackendUnavailable(f"{library}: unexpected harness ABI")
        tail: list[Any] = [_vp, _i, _i, _fp, _dp, _fp]  # crop, layout, size, mask, m, delta
        lib.rtdub_harness_blend_rgb.argtypes = [_vp, _i, _i, _i, _i, *tail]
        lib.rtdub_harness_blend_luma.argtypes = [_vp, _i, _i, _i, *tail]
        lib.rtdub_harness_blend_chroma.argtypes = [_vp, _vp, _i, _i, _i, _i, *tail]
        for f in (lib.rtdub_harness_blend_rgb, lib.rtdub_harness_blend_luma, lib.rtdub_harness_blend_chroma):
            f.restype = _i
        self._lib = lib
        self.blended = 0  # pixels (or chroma pairs) blended by the last call

    def _tail(self, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> tuple[object, ...]:
        m = np.asarray(b.matrix, np.float64)
        self._keep = (crop, m, d)  # alive for the duration of the call
        return (
            _ptr(crop),
            layout,
            self.size,
            self._soft.ctypes.data_as(_fp),
            m.ctypes.data_as(_dp),
            d.ctypes.data_as(_fp),
        )

    def _rgb(self, box: np.ndarray, pix_stride: int, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None:
        self.blended = self._lib.rtdub_harness_blend_rgb(
            _ptr(box), box.strides[0], pix_stride, b.width, b.height, *self._tail(crop, layout, b, d)
        )

    def _luma(self, box: np.ndarray, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None:
        self.blended = self._lib.rtdub_harness_blend_luma(
            _ptr(box), box.strides[0], b.width, b.height, *self._tail(crop, layout, b, d)
        )

    def _chroma(self, u: np.ndarray, v: np.ndarray, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None:
        self.blended = self._lib.rtdub_harness_blend_chroma(
            _ptr(u), _ptr(v), u.strides[0], u.strides[1], b.width, b.height, *self._tail(crop, layout, b, d)
        )
