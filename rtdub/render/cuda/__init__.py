"""GPU paste-back: the CUDA blending kernel (blend.cu) and its pycuda loader.

:class:`CudaBlender` does on the GPU what :func:`rtdub.render.blend.paste` does with OpenCV: for each
pixel of the face region's box it samples the generated crop and the feathered mask through the
inverse alignment (bilinear, bit-compatible with cv2.warpAffine), adds the colour offset of
:func:`rtdub.render.blend.match_colour` and blends into the frame in place. It handles packed RGB(X)
frames and 4:2:0 frames (NV12 or I420): the generated RGB is converted to BT.601 limited-range
YUV, luma is blended at full resolution and chroma at half resolution with the mask sampled at
the chroma positions.

pycuda is imported only when a :class:`CudaBlender` is made; a missing pycuda, driver or GPU
raises :class:`~rtdub.exceptions.BackendUnavailable`. On a machine without a GPU,
:class:`rtdub.render.cuda.harness.HarnessBlender` runs the same per-pixel code (blend_math.h) compiled
for the CPU with g++; the tests use it to check the kernel math against ``blend.paste``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ...exceptions import BackendUnavailable
from ...face.align import Alignment
from ..blend import FaceMask, colour_offset
from .plan import LAYOUT_CHW_UNIT, LAYOUT_HWC_F32, LAYOUT_HWC_U8, BlendPlan, Box, crop_layout, offset_array, plan_paste

logger = logging.getLogger(__name__)

CUDA_DIR = Path(__file__).resolve().parent
KERNEL_SOURCE = CUDA_DIR / "blend.cu"
BLOCK = (16, 16, 1)
INSTALL_HINT = "pip install 'rtdub[gpu]' (pycuda and tensorrt) on a machine with an NVIDIA driver"


def _grid(width: int, height: int) -> tuple[int, int]:
    return (width + BLOCK[0] - 1) // BLOCK[0], (height + BLOCK[1] - 1) // BLOCK[1]


def _check_rgb(frame: np.ndarray) -> int:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"frame of {frame.dtype} {frame.shape}: expected (H, W, 3|4) uint8")
    if frame.strides[2] != 1 or frame.strides[1] != frame.shape[2]:
        raise ValueError("frame rows must be packed pixels (the row pitch may be anything)")
    return int(frame.shape[2])


def _check_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    if any(p.dtype != np.uint8 or p.ndim != 2 for p in (y, u, v)):
        raise ValueError("y, u, v must be 2-D uint8 planes")
    h, w = y.shape
    if u.shape != ((h + 1) // 2, (w + 1) // 2) or v.shape != u.shape:
        raise ValueError(f"chroma planes {u.shape}, {v.shape} do not fit a 4:2:0 frame of {h}x{w}")
    if y.strides[1] != 1 or u.strides != v.strides:
        raise ValueError("luma must have unit pixel stride and u, v the same strides")


class Blender(ABC):
    """Paste-back into host frames; subclasses run the per-pixel kernel math somewhere."""

    def __init__(self, mask: FaceMask) -> None:
        self.mask = mask
        self.size = int(mask.soft.shape[0])
        self._soft = np.ascontiguousarray(mask.soft, np.float32)

    def paste_rgb(
        self, frame: np.ndarray, crop: np.ndarray, al: Alignment, offset: np.ndarray | None = None
    ) -> BlendPlan | None:
        """Blend ``crop`` into ``frame`` (H, W, 3|4 uint8, RGB order) in place.

        ``crop`` is (S, S, 3) in 0..255 (float or uint8) or the generator's (3, S, S) in [0, 1];
        ``offset`` is the colour offset (:func:`colour_offset`). Returns None when the face
        region falls outside the frame."""
        ps = _check_rgb(frame)
        plan = plan_paste(frame.shape[1], frame.shape[0], al, self.mask)
        if plan is None:
            return None
        c, layout = crop_layout(crop, self.size)
        self._rgb(frame[plan.luma.slices], ps, c, layout, plan.luma, offset_array(offset))
        return plan

    def paste_yuv420(
        self,
        y: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        crop: np.ndarray,
        al: Alignment,
        offset: np.ndarray | None = None,
    ) -> BlendPlan | None:
        """Blend into a 4:2:0 frame given as planes (I420: three planes; NV12: ``u = uv[..., 0]``,
        ``v = uv[..., 1]``); ``crop`` and ``offset`` as in :meth:`paste_rgb`."""
        _check_planes(y, u, v)
        plan = plan_paste(y.shape[1], y.shape[0], al, self.mask, chroma=True)
        if plan is None:
            return None
        assert plan.chroma is not None
        c, layout = crop_layout(crop, self.size)
        d = offset_array(offset)
        self._luma(y[plan.luma.slices], c, layout, plan.luma, d)
        ys, xs = plan.chroma.slices
        self._chroma(u[ys, xs], v[ys, xs], c, layout, plan.chroma, d)
        return plan

    def paste_nv12(
        self, y: np.ndarray, uv: np.ndarray, crop: np.ndarray, al: Alignment, offset: np.ndarray | None = None
    ) -> BlendPlan | None:
        """NV12: luma (H, W) and interleaved chroma (H/2, W/2, 2)."""
        return self.paste_yuv420(y, uv[..., 0], uv[..., 1], crop, al, offset)

    @abstractmethod
    def _rgb(self, box: np.ndarray, pix_stride: int, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None:
        """Blend into ``box``, a view of the frame restricted to ``b``."""

    @abstractmethod
    def _luma(self, box: np.ndarray, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None: ...

    @abstractmethod
    def _chroma(self, u: np.ndarray, v: np.ndarray, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory."""


def _import_pycuda() -> tuple[Any, Any]:
    try:
        import pycuda.driver as cuda
        from pycuda.compiler import SourceModule
    except ImportError as exc:
        raise BackendUnavailable(f"the CUDA blender needs pycuda, which is not installed: {INSTALL_HINT}") from exc
    try:
        cuda.init()
        n = cuda.Device.count()
    except Exception as exc:  # pycuda raises pycuda._driver.Error subclasses (no driver, no device)
        raise BackendUnavailable(f"CUDA is not usable here (no NVIDIA driver or GPU?): {exc}") from exc
    if n == 0:
        raise BackendUnavailable("no CUDA device found")
    return cuda, SourceModule


class CudaBlender(Blender):
    """The paste-back kernels on a GPU, through pycuda.

    ``module`` may name a prebuilt ``.ptx``/``.cubin`` of blend.cu (``nvcc -ptx -arch=sm_80
    -I rtdub/render/cuda rtdub/render/cuda/blend.cu``); without it, blend.cu is compiled at start-up with
    nvcc through pycuda's SourceModule (cached by pycuda). The host-frame methods of
    :class:`Blender` copy only the face region's box to the device and back; the ``launch_*``
    methods work on frames and crops that already live on the device (NVDEC surfaces,
    TensorRT output bindings) and only enqueue the kernel on ``stream``.
    Not thread-safe: one per stream, like the backends."""

    def __init__(self, mask: FaceMask, device: int = 0, module: str | Path | None = None) -> None:
        super().__init__(mask)
        cuda, source_module = _import_pycuda()
        self._cuda = cuda
        try:
            self._ctx = cuda.Device(device).retain_primary_context()
        except Exception as exc:
            raise BackendUnavailable(f"CUDA device {device} is not usable: {exc}") from exc
        self._ctx.push()
        try:
            if module is not None:
                self._mod = cuda.module_from_file(str(module))
            else:
                self._mod = source_module(
                    KERNEL_SOURCE.read_text(),
                    no_extern_c=True,
                    include_dirs=[str(CUDA_DIR)],
                    options=["-O3"],
                )
            self._k_rgb = self._mod.get_function("rtdub_blend_rgb")
            self._k_rgb.prepare("PiiiiPiiPddddddfff")
            self._k_luma = self._mod.get_function("rtdub_blend_luma")
            self._k_luma.prepare("PiiiPiiPddddddfff")
            self._k_chroma = self._mod.get_function("rtdub_blend_chroma")
            self._k_chroma.prepare("PPiiiiPiiPddddddfff")
            self.stream = cuda.Stream()
            self._mask_dev = cuda.to_device(self._soft)
            self._crop_dev = cuda.mem_alloc(self.size * self.size * 3 * 4)
            self._crop_host = cuda.pagelocked_empty(self.size * self.size * 3 * 4, np.uint8)
            self._stage: Any = None  # pinned host staging for the box, grown on demand
            self._stage_dev: Any = None
        finally:
            self._ctx.pop()
        logger.info("cuda blender ready", extra={"device": device, "name": cuda.Device(device).name()})

    # -- device-side API -------------------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator[None]:
        """Make the blender's CUDA context current around ``launch_*`` calls (any thread)."""
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    @property
    def mask_ptr(self) -> int:
        return int(self._mask_dev)

    def _tail(self, crop_ptr: int, layout: int, b: Box, d: np.ndarray) -> tuple[Any, ...]:
        return (
            np.uintp(crop_ptr), np.int32(layout), np.int32(self.size), np.uintp(self.mask_ptr),
            *(np.float64(v) for v in b.matrix), *(np.float32(v) for v in d),
        )  # fmt: skip

    def launch_rgb(
        self, box_ptr: int, pitch: int, pix_stride: int, b: Box, crop_ptr: int, layout: int,
        offset: np.ndarray | None = None, stream: Any = None,
    ) -> None:  # fmt: skip
        """Enqueue the RGB kernel; ``box_ptr`` points at pixel (b.x0, b.y0) of a device frame."""
        args = (np.uintp(box_ptr), np.int32(pitch), np.int32(pix_stride), np.int32(b.width), np.int32(b.height))
        self._k_rgb.prepared_async_call(
            _grid(b.width, b.height), BLOCK, stream or self.stream, *args,
            *self._tail(crop_ptr, layout, b, offset_array(offset)),
        )  # fmt: skip

    def launch_luma(
        self, box_ptr: int, pitch: int, b: Box, crop_ptr: int, layout: int,
        offset: np.ndarray | None = None, stream: Any = None,
    ) -> None:  # fmt: skip
        args = (np.uintp(box_ptr), np.int32(pitch), np.int32(b.width), np.int32(b.height))
        self._k_luma.prepared_async_call(
            _grid(b.width, b.height), BLOCK, stream or self.stream, *args,
            *self._tail(crop_ptr, layout, b, offset_array(offset)),
        )  # fmt: skip

    def launch_chroma(
        self, u_ptr: int, v_ptr: int, pitch: int, step: int, b: Box, crop_ptr: int, layout: int,
        offset: np.ndarray | None = None, stream: Any = None,
    ) -> None:  # fmt: skip
        """NV12: ``v_ptr = u_ptr + 1`` and ``step = 2``; I420: two planes and ``step = 1``."""
        args = (np.uintp(u_ptr), np.uintp(v_ptr), np.int32(pitch), np.int32(step))
        self._k_chroma.prepared_async_call(
            _grid(b.width, b.height), BLOCK, stream or self.stream, *args, np.int32(b.width), np.int32(b.height),
            *self._tail(crop_ptr, layout, b, offset_array(offset)),
        )  # fmt: skip

    # -- host-frame path -------------------------------------------------------------------
    def _upload_crop(self, crop: np.ndarray) -> int:
        raw = crop.reshape(-1).view(np.uint8)
        self._crop_host[: raw.size] = raw
        self._cuda.memcpy_htod_async(self._crop_dev, self._crop_host[: raw.size], self.stream)
        return int(self._crop_dev)

    def _staging(self, nbytes: int) -> tuple[np.ndarray, Any]:
        if self._stage is None or self._stage.size < nbytes:
            self._stage = self._cuda.pagelocked_empty(nbytes, np.uint8)
            self._stage_dev = self._cuda.mem_alloc(nbytes)
        return self._stage[:nbytes], self._stage_dev

    def _run_box(self, views: list[np.ndarray], launch: Any) -> None:
        """Copy the box views to the device (one staging buffer), launch, copy back."""
        sizes = [v.size for v in views]
        host, dev = self._staging(sum(sizes))
        off = 0
        for v, n in zip(views, sizes, strict=True):
            host[off : off + n].reshape(v.shape)[...] = v
            off += n
        self._cuda.memcpy_htod_async(dev, host, self.stream)
        launch(int(dev))
        self._cuda.memcpy_dtoh_async(host, dev, self.stream)
        self.stream.synchronize()
        off = 0
        for v, n in zip(views, sizes, strict=True):
            v[...] = host[off : off + n].reshape(v.shape)
            off += n

    def _rgb(self, box: np.ndarray, pix_stride: int, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None:
        with self.active():
            cp = self._upload_crop(crop)
            pitch = b.width * pix_stride
            self._run_box([box], lambda p: self.launch_rgb(p, pitch, pix_stride, b, cp, layout, d))

    def _luma(self, box: np.ndarray, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None:
        with self.active():
            cp = self._upload_crop(crop)
            self._run_box([box], lambda p: self.launch_luma(p, b.width, b, cp, layout, d))

    def _chroma(self, u: np.ndarray, v: np.ndarray, crop: np.ndarray, layout: int, b: Box, d: np.ndarray) -> None:
        with self.active():
            cp = self._upload_crop(crop)
            n = b.width * b.height
            # staged as two packed planes (I420-like): u then v
            self._run_box([u, v], lambda p: self.launch_chroma(p, p + n, b.width, 1, b, cp, layout, d))

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        self._ctx.push()
        try:
            for buf in (self._mask_dev, self._crop_dev, self._stage_dev):
                if buf is not None:
                    buf.free()
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None


__all__ = [
    "LAYOUT_CHW_UNIT",
    "LAYOUT_HWC_F32",
    "LAYOUT_HWC_U8",
    "BlendPlan",
    "Blender",
    "Box",
    "CudaBlender",
    "colour_offset",
    "plan_paste",
]
