"""The compositor is chosen once from what the backend declares (fields, a CUDA device), not
from its name; each implementation pastes what the per-frame code pasted before: the CPU paste
(colour matched), the blending kernel (its CPU harness here: within 1 level of the CPU paste)
and hi-res compositing, which hands renders at S to its base."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from rtdub.backends.base import Backend
from rtdub.face.align import Alignment, warp_to_crop
from rtdub.render.blend import face_mask, match_colour, paste
from rtdub.render.compositor import CpuCompositor, HiresCompositor, KernelCompositor, make_compositor
from rtdub.render.hires import RenderSizeConfig
from rtdub.render.reference import Candidate

S = 96


class DeclaredBackend(Backend):
    """A backend that only declares abilities (its stages are never run here)."""

    name = "tensorrt"  # the name must not matter

    def __init__(self, fields: bool = False, device: int | None = None) -> None:
        self._fields, self._device = fields, device

    @property
    def has_fields(self) -> bool:
        return self._fields

    @property
    def cuda_device(self) -> int | None:
        return self._device

    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        raise AssertionError("not run")

    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        raise AssertionError("not run")


def case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, Alignment]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    face = (rng.random((S, S, 3)) * 255).astype(np.float32)
    al = Alignment(np.array([[0.8, 0.05, -60.0], [-0.05, 0.8, -40.0]]), S)
    return frame, face, al


def candidate(crop: np.ndarray) -> Candidate:
    return Candidate(time=0.0, gap=0.0, yaw=0.0, crop=crop)


def test_choice_follows_the_declared_abilities(caplog: pytest.LogCaptureFixture) -> None:
    mask, render = face_mask(S), RenderSizeConfig()
    assert type(make_compositor(DeclaredBackend(), mask, render)) is CpuCompositor
    hi = make_compositor(DeclaredBackend(fields=True), mask, render)
    assert isinstance(hi, HiresCompositor) and type(hi.base) is CpuCompositor
    # a CUDA device without a usable kernel (no pycuda here, or no GPU): the CPU paste, said once
    with caplog.at_level(logging.WARNING, logger="rtdub.render.compositor"):
        fallback = make_compositor(DeclaredBackend(device=0), mask, render)
    try:
        import pycuda  # noqa: F401
    except ImportError:
        assert type(fallback) is CpuCompositor
        assert "CUDA blender unavailable on device 0" in caplog.text


def test_cpu_compositor_is_the_colour_matched_paste() -> None:
    frame, face, al = case()
    mask = face_mask(S)
    crop = warp_to_crop(frame, al)
    want = frame.copy()
    want_region = paste(want, match_colour(face, crop.astype(np.float32), mask), al, mask)
    comp = CpuCompositor(mask)
    got = frame.copy()
    pasted = comp.paste(got, comp.prepare(face, crop, None, candidate(crop), S), al, crop, S)
    assert (got == want).all()
    assert pasted.size == S and pasted.region is not None and want_region is not None
    assert (pasted.region.x0, pasted.region.y0) == (want_region.x0, want_region.y0)


def test_hires_compositor_hands_renders_at_the_crop_size_to_its_base() -> None:
    frame, face, al = case(1)
    mask = face_mask(S)
    crop = warp_to_crop(frame, al)
    hi = HiresCompositor(CpuCompositor(mask), RenderSizeConfig())
    fields = np.zeros((6, S, S), np.float32)
    at_s = hi.prepare(face, crop, fields, candidate(crop), S)
    assert at_s.fields is None and at_s.face is not None  # the base's render
    at_r = hi.prepare(face, crop, fields, candidate(crop), 2 * S)
    assert at_r.fields is not None and at_r.face is None and at_r.offset is not None
    got = frame.copy()
    pasted = hi.paste(got, at_r, al, crop, 2 * S)
    assert pasted.size == 2 * S and pasted.region is not None
    assert (got != frame).any()


def test_kernel_compositor_matches_the_cpu_paste(tmp_path: Path) -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is absent: cannot build the kernel's CPU harness")
    from rtdub.render.cuda.harness import HarnessBlender, build_harness

    mask = face_mask(S)
    kernel = KernelCompositor(HarnessBlender(mask, build_harness(tmp_path)))
    cpu = CpuCompositor(mask)
    for seed in range(6):
        frame, face, al = case(seed)
        crop = warp_to_crop(frame, al)
        a, b = frame.copy(), frame.copy()
        cpu.paste(a, cpu.prepare(face, crop, None, candidate(crop), S), al, crop, S)
        kernel.paste(b, kernel.prepare(face, crop, None, candidate(crop), S), al, crop, S)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert (a != frame).any()
