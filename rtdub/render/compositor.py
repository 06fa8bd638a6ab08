"""Compositing: the generated face back into the frame, chosen once per pipeline by what the
backend can do.

    generator ─► face (S px) [+ fields] ─► Compositor.prepare ─► Render ─► Compositor.paste ─► frame
                                                               (kept: a skipped generator pastes it again)

Three implementations, one concept each:

- :class:`CpuCompositor`: the S px face, colour-matched to the frame's crop, pasted through the
  soft lower-face mask with numpy/OpenCV (``blend.paste``).
- :class:`KernelCompositor`: the same paste run by a :class:`~rtdub.render.cuda.Blender` (the CUDA
  kernel beside a GPU backend; the kernel's CPU harness in tests). The colour offset is measured
  on the CPU and added by the kernel.
- :class:`HiresCompositor`: with a backend that gives the generator's fields, the face is
  composited again at a render size R > S from an R px crop of the reference, in the same
  resampling as the paste (``hires.composite_into``), so the mouth keeps the frame's resolution.
  Frames rendered at S go to its base compositor (CPU or kernel).

:func:`make_compositor` picks them from the backend's declared abilities (``has_fields``,
``cuda_device``), never from its name.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend
from ..face.align import Alignment
from ..model import FieldLayout
from . import hires
from .blend import FaceMask, PasteRegion, colour_offset, match_colour, paste
from .cuda import Blender
from .hires import DEFAULT_FIELDS, RenderSizeConfig
from .reference import Candidate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Render:
    """What the generator made for one frame, ready to paste at any later frame's alignment."""

    face: np.ndarray | None  # (S, S, 3) float32 in 0..255 (None for a hi-res render)
    fields: np.ndarray | None = None  # hi-res: the generator's fields (channels of a FieldLayout, S, S)
    reference: Candidate | None = None  # hi-res: the reference the fields warp
    offset: np.ndarray | None = None  # hi-res: the colour offset (3,) the paste adds


@dataclass(frozen=True)
class Pasted:
    region: PasteRegion | None  # the frame pixels blended (None: outside the frame, or on a device)
    size: int  # side of the pasted face crop (S, or R for a hi-res render)
    composite_ms: float = 0.0  # the hi-res compositing and paste (part of the pipeline's "blend")


class Compositor(ABC):
    """Turns the generator's output into a :class:`Render` and pastes it into frames."""

    name: str = "base"

    def __init__(self, mask: FaceMask, colour_match: bool = True) -> None:
        self.mask = mask  # the lower-face mask at S
        self.size = int(mask.soft.shape[0])
        self.colour_match = colour_match

    @abstractmethod
    def prepare(
        self, face: np.ndarray, crop: np.ndarray, fields: np.ndarray | None, reference: Candidate, size: int
    ) -> Render:
        """``face`` (S, S, 3) float32 0..255 from the generator, ``crop`` the frame's aligned
        (S, S, 3) crop, ``fields`` the generator's fields or None, ``size`` the render size."""

    @abstractmethod
    def paste(self, image: np.ndarray, render: Render, al: Alignment, crop: np.ndarray, size: int) -> Pasted:
        """Blend ``render`` into ``image`` (H, W, 3 uint8 RGB, in place) at alignment ``al`` (at
        S); ``crop`` is this frame's aligned crop (for a colour offset measured at paste time)."""

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless compositors keep the default
        """Forget per-stream state."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory."""


class CpuCompositor(Compositor):
    """The S px face pasted with numpy/OpenCV; colour matched when the render is made."""

    name = "cpu"

    def prepare(
        self, face: np.ndarray, crop: np.ndarray, fields: np.ndarray | None, reference: Candidate, size: int
    ) -> Render:
        if self.colour_match:
            face = match_colour(face, crop.astype(np.float32), self.mask)
        return Render(face)

    def paste(self, image: np.ndarray, render: Render, al: Alignment, crop: np.ndarray, size: int) -> Pasted:
        assert render.face is not None
        return Pasted(paste(image, render.face, al, self.mask), self.size)


class KernelCompositor(Compositor):
    """The S px face pasted by a blending kernel (:class:`~rtdub.render.cuda.Blender`); the
    colour offset is measured against this frame's crop and added by the kernel."""

    name = "kernel"

    def __init__(self, blender: Blender, colour_match: bool = True) -> None:
        super().__init__(blender.mask, colour_match)
        self.blender = blender

    def prepare(
        self, face: np.ndarray, crop: np.ndarray, fields: np.ndarray | None, reference: Candidate, size: int
    ) -> Render:
        return Render(face)

    def paste(self, image: np.ndarray, render: Render, al: Alignment, crop: np.ndarray, size: int) -> Pasted:
        assert render.face is not None
        offset = colour_offset(render.face, crop.astype(np.float32), self.mask) if self.colour_match else None
        self.blender.paste_rgb(image, render.face, al, offset)
        return Pasted(None, self.size)

    def close(self) -> None:
        self.blender.close()


class HiresCompositor(Compositor):
    """Renders at R > S from the generator's fields and the reference's R px crop; renders at S
    go to ``base``."""

    name = "hires"

    def __init__(self, base: Compositor, render: RenderSizeConfig, layout: FieldLayout = DEFAULT_FIELDS) -> None:
        super().__init__(base.mask, base.colour_match)
        self.base = base
        self.render = render
        self.layout = layout  # the bundle's field channels
        self._interp = render.interpolation
        self._ref_cache: tuple[float, int, np.ndarray] | None = None
        self._masks: dict[int, FaceMask] = {self.size: self.mask}

    def mask_at(self, size: int) -> FaceMask:
        """The lower-face mask at ``size`` px (the S mask resampled; cached per size)."""
        m = self._masks.get(size)
        if m is None:
            m = self._masks[size] = hires.scaled_mask(self.mask, size)
        return m

    def reference_at(self, ref: Candidate, size: int) -> np.ndarray:
        """The reference as a (size, size, 3) float32 crop, from its hi-res crop when it has one."""
        c = self._ref_cache
        if c is not None and c[0] == ref.time and c[1] == size:
            return c[2]
        src = ref.hires if ref.hires is not None else ref.crop
        out = hires.resize_crop(src, size).astype(np.float32)
        self._ref_cache = (ref.time, size, out)
        return out

    def prepare(
        self, face: np.ndarray, crop: np.ndarray, fields: np.ndarray | None, reference: Candidate, size: int
    ) -> Render:
        if fields is None or size <= self.size:
            return self.base.prepare(face, crop, fields, reference, size)
        # colour offset measured at S (the same band, the same means), applied at R
        shift = colour_offset(face, crop.astype(np.float32), self.mask) if self.colour_match else None
        return Render(None, fields, reference, shift)

    def paste(self, image: np.ndarray, render: Render, al: Alignment, crop: np.ndarray, size: int) -> Pasted:
        if render.fields is None:
            return self.base.paste(image, render, al, crop, size)
        assert render.reference is not None
        # the fields applied to the reference's R px crop and pasted in one resampling (a
        # skipped generator re-renders its last fields at this frame's alignment)
        t0 = time.perf_counter()
        fs = max(size, self.size)
        region = hires.composite_into(
            image,
            self.reference_at(render.reference, fs),
            render.fields,
            hires.scaled(al, fs),
            self.mask_at(fs),
            self._interp,
            render.offset,
            self.render.detail,
            self.layout,
        )
        return Pasted(region, fs, (time.perf_counter() - t0) * 1000)

    def reset(self) -> None:
        self._ref_cache = None
        self.base.reset()

    def close(self) -> None:
        self.base.close()


def make_compositor(
    backend: Backend,
    mask: FaceMask,
    render: RenderSizeConfig,
    colour_match: bool = True,
    layout: FieldLayout = DEFAULT_FIELDS,
) -> Compositor:
    """The compositor for ``backend``: the CUDA kernel beside a backend on a CUDA device (the
    CPU paste when the kernel cannot load), hi-res compositing when it gives the fields."""
    base: Compositor = CpuCompositor(mask, colour_match)
    device = backend.cuda_device
    if device is not None:
        try:
            from .cuda import CudaBlender

            base = KernelCompositor(CudaBlender(mask, device=device), colour_match)
        except Exception as exc:  # no pycuda, no device, no nvcc: the CPU paste still works
            logger.warning(
                "CUDA blender unavailable on device %d, blending on the CPU: %s",
                device,
                exc,
                extra={"device": device, "reason": str(exc)},
            )
    return HiresCompositor(base, render, layout) if backend.has_fields else base
