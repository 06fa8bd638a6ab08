"""The CUDA paste-back kernel: its per-pixel math (blend_math.h) compiled for the CPU by the
harness vs the numpy/OpenCV ``blend.paste``, the NV12 path vs a numpy reference, the PTX
compile with nvcc, and (on a GPU) the kernel itself vs the harness.

Tolerances: the harness must match ``blend.paste`` within 1 intensity level per channel and
leave every pixel outside the mask bit-identical (measured here: max abs diff 0, i.e. bit-exact,
because the kernel reproduces cv2.warpAffine's fixed-point sampling). The NV12 path must match
the numpy reference within 1 level on Y, U and V.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub.exceptions import BackendUnavailable
from rtdub.face.align import Alignment, warp_to_crop
from rtdub.render.blend import face_mask, match_colour, paste
from rtdub.render.cuda import CUDA_DIR, KERNEL_SOURCE, colour_offset, plan_paste
from rtdub.render.cuda.harness import HarnessBlender, build_harness

from .fake_gpu import fake_pycuda, harness_kernels
from .gpu import requires_gpu

TOL = 1  # max abs difference, intensity levels
S = 96


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> HarnessBlender:
    if shutil.which("g++") is None:
        pytest.skip("g++ is absent: cannot build the CPU harness")
    lib = build_harness(tmp_path_factory.mktemp("harness"))
    return HarnessBlender(face_mask(S), lib)


def random_alignment(rng: np.random.Generator, w: int, h: int, margin: float = 40) -> Alignment:
    """A random similarity frame -> crop: scale 0.3..2.5 crop px per frame px, ±0.6 rad, the
    face centre anywhere in the frame or partly outside it."""
    sc, th = rng.uniform(0.3, 2.5), rng.uniform(-0.6, 0.6)
    cx, cy = rng.uniform(-margin, w + margin), rng.uniform(-margin, h + margin)
    r = sc * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    t = np.array([S / 2, S / 2]) - r @ np.array([cx, cy])
    return Alignment(np.hstack([r, t[:, None]]), S)


def random_case(seed: int, w: int = 320, h: int = 240) -> tuple[np.ndarray, np.ndarray, Alignment]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if seed % 2:  # noise crop: the hardest case for sampling positions
        face = (rng.random((S, S, 3)) * 255).astype(np.float32)
    else:  # smooth crop with an over-range patch (exercises the clipping)
        yy, xx = np.mgrid[0:S, 0:S] / S
        face = np.stack([300 * xx - 20, 255 * yy, 128 + 100 * np.sin(6 * xx)], -1).astype(np.float32)
    return frame, face, random_alignment(rng, w, h)


def test_harness_matches_paste_on_random_inputs(harness: HarnessBlender) -> None:
    mask = harness.mask
    checked = exact = 0
    for seed in range(48):
        frame, face, al = random_case(seed)
        orig = warp_to_crop(frame, al).astype(np.float32)
        ref = frame.copy()
        region = paste(ref, match_colour(face, orig, mask), al, mask)
        got = frame.copy()
        plan = harness.paste_rgb(got, face, al, colour_offset(face, orig, mask))
        if region is None:
            assert plan is None and (got == frame).all()
            continue
        assert plan is not None
        assert (plan.luma.x0, plan.luma.y0) == (region.x0, region.y0)
        assert (plan.luma.height, plan.luma.width) == region.alpha.shape
        touched = np.zeros(frame.shape[:2], bool)
        touched[plan.luma.slices] = region.alpha > 0
        assert harness.blended == int(touched.sum())
        diff = np.abs(ref.astype(np.int16) - got.astype(np.int16))
        assert diff.max() <= TOL, (seed, diff.max())
        assert (got[~touched] == frame[~touched]).all()  # untouched pixels are bit-identical
        checked += int(touched.sum())
        exact += int((diff.max(-1)[touched] == 0).sum())
    assert checked > 10_000
    assert exact / checked > 0.999  # in practice every pixel is bit-exact


@pytest.mark.parametrize("layout", ["chw_unit", "hwc_u8"])
def test_harness_crop_layouts(harness: HarnessBlender, layout: str) -> None:
    """The generator's raw (3, S, S) [0, 1] output and uint8 crops blend like the pipeline does."""
    mask = harness.mask
    for seed in range(6):
        frame, face, al = random_case(seed)
        rng = np.random.default_rng(100 + seed)
        if layout == "chw_unit":
            raw = rng.uniform(-0.2, 1.2, (3, S, S)).astype(np.float32)  # out of range on purpose
            face = np.clip(raw.transpose(1, 2, 0), 0, 1) * 255  # rtdub/render/pipeline.py
            crop: np.ndarray = raw
        else:
            crop = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
            face = crop.astype(np.float32)
        ref, got = frame.copy(), frame.copy()
        region = paste(ref, face, al, mask)
        plan = harness.paste_rgb(got, crop, al)
        assert (region is None) == (plan is None)
        assert np.abs(ref.astype(np.int16) - got.astype(np.int16)).max() <= TOL


def test_harness_rgbx_and_pitch(harness: HarnessBlender) -> None:
    """4-byte pixels and a padded row pitch: only RGB changes, X and the padding stay."""
    frame, face, _ = random_case(3)
    h, w = frame.shape[:2]
    al = Alignment(np.array([[0.9, 0.1, S / 2 - 0.9 * 150 - 0.1 * 110], [-0.1, 0.9, S / 2 + 0.1 * 150 - 0.9 * 110]]), S)
    big = np.full((h, w + 7, 4), 77, np.uint8)
    big[:, :w, :3] = frame
    view = big[:, :w]
    ref = frame.copy()
    paste(ref, face, al, harness.mask)
    assert harness.paste_rgb(view, face, al) is not None
    assert np.abs(view[..., :3].astype(np.int16) - ref).max() <= TOL
    assert (big[..., 3] == 77).all() and (big[:, w:] == 77).all()


# ---- 4:2:0 ----------------------------------------------------------------------------------
KY = np.array([0.25678824, 0.50412941, 0.09790588], np.float32)
KU = np.array([-0.14822353, -0.29099216, 0.43921569], np.float32)
KV = np.array([0.43921569, -0.36778824, -0.07142745], np.float32)


def _mix(dst: np.ndarray, g: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Blend one plane's box where a > 0, as blend.paste does."""
    out = dst.copy()
    t = a > 0
    out[t] = np.clip(np.rint(dst[t].astype(np.float32) * (1 - a[t]) + g[t] * a[t]), 0, 255).astype(np.uint8)
    return out


def _sample(img: np.ndarray, m: np.ndarray, w: int, h: int, border: int) -> np.ndarray:
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border)


def yuv420_reference(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, face: np.ndarray, al: Alignment, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy/OpenCV paste into I420 planes: luma at full resolution, chroma at the centre of
    each 2×2 block, the generated RGB converted to BT.601 limited range."""
    mask = face_mask(S)
    plan = plan_paste(y.shape[1], y.shape[0], al, mask, chroma=True)
    y, u, v = y.copy(), u.copy(), v.copy()
    if plan is None:
        return y, u, v
    gen = face.astype(np.float32) + offset.astype(np.float32)
    assert plan.chroma is not None
    for box, planes in ((plan.luma, (y,)), (plan.chroma, (u, v))):
        m = box.matrix_array()
        rgb = _sample(gen, m, box.width, box.height, cv2.BORDER_REPLICATE)
        a = _sample(mask.soft, m, box.width, box.height, cv2.BORDER_CONSTANT)
        ks = (KY,) if len(planes) == 1 else (KU, KV)
        bases = (16.0,) if len(planes) == 1 else (128.0, 128.0)
        for p, k, base in zip(planes, ks, bases, strict=True):
            g = np.float32(base) + ((k[0] * rgb[..., 0] + k[1] * rgb[..., 1]) + k[2] * rgb[..., 2])
            p[box.slices] = _mix(p[box.slices], g, a)
    return y, u, v


@pytest.mark.parametrize("size", [(240, 320), (239, 317)])  # even and odd frame sizes
def test_harness_nv12_matches_numpy_reference(harness: HarnessBlender, size: tuple[int, int]) -> None:
    h, w = size
    ch, cw = (h + 1) // 2, (w + 1) // 2
    for seed in range(16):
        rng = np.random.default_rng(seed)
        _, face, al = random_case(seed, w, h)
        y = rng.integers(16, 236, (h, w), dtype=np.uint8)
        uv = rng.integers(16, 241, (ch, cw, 2), dtype=np.uint8)
        offset = rng.uniform(-20, 20, 3).astype(np.float32)
        ry, ru, rv = yuv420_reference(y, uv[..., 0], uv[..., 1], face, al, offset)
        gy, guv = y.copy(), uv.copy()
        plan = harness.paste_nv12(gy, guv, face, al, offset)
        if plan is None:
            assert (ry == y).all() and (ru == uv[..., 0]).all()
        for name, a, b in (("Y", gy, ry), ("U", guv[..., 0], ru), ("V", guv[..., 1], rv)):
            d = np.abs(a.astype(np.int16) - b.astype(np.int16)).max()
            assert d <= TOL, (seed, name, d)


def test_harness_i420_flat_colour_matches_opencv_conversion(harness: HarnessBlender) -> None:
    """Independent check of the colour math: pasting a flat colour over a flat frame gives, in
    the mask's core, what OpenCV's RGB -> I420 conversion gives for that colour."""
    h, w = 240, 320
    colour = np.array([200, 100, 50], np.uint8)
    expect = cv2.cvtColor(np.tile(colour, (h, w, 1)), cv2.COLOR_RGB2YUV_I420)
    ey, eu, ev = int(expect[0, 0]), int(expect[h, 0]), int(expect[h + h // 4, 0])
    y = np.full((h, w), 30, np.uint8)
    u = np.full((h // 2, w // 2), 128, np.uint8)
    v = np.full((h // 2, w // 2), 128, np.uint8)
    al = Alignment(np.array([[0.8, 0.0, S / 2 - 0.8 * 160], [0.0, 0.8, S / 2 - 0.8 * 120]]), S)
    face = np.tile(colour.astype(np.float32), (S, S, 1))
    assert harness.paste_yuv420(y, u, v, face, al) is not None
    assert abs(int(y.max()) - ey) <= 1 and (np.abs(y.astype(np.int16) - ey) <= 1).sum() > 500  # the core
    assert abs(int(u.min()) - eu) <= 1 and abs(int(v.max()) - ev) <= 1


def test_bad_inputs_are_rejected(harness: HarnessBlender) -> None:
    frame, face, al = random_case(0)
    with pytest.raises(ValueError):
        harness.paste_rgb(frame.astype(np.float32), face, al)
    with pytest.raises(ValueError):
        harness.paste_rgb(frame, face[:50], al)
    with pytest.raises(ValueError):
        harness.paste_yuv420(frame[..., 0], frame[:10, :10, 0], frame[:10, :10, 0], face, al)


# ---- nvcc -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_to_ptx(tmp_path: Path, arch: str) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is absent")
    out = tmp_path / f"blend_{arch}.ptx"
    cmd = [nvcc, "-ptx", f"-arch={arch}", "-I", str(CUDA_DIR), str(KERNEL_SOURCE), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ptx = out.read_text()
    assert f".target {arch}" in ptx
    for k in ("rtdub_blend_rgb", "rtdub_blend_luma", "rtdub_blend_chroma"):
        assert f".entry {k}(" in ptx
    assert "fma.rn.f32" not in ptx  # no fused float ops: results stay equal to the CPU harness


# ---- on a GPU -------------------------------------------------------------------------------
def test_cuda_blender_without_pycuda_or_gpu_is_backend_unavailable() -> None:
    from .gpu import cuda_context_ok

    if cuda_context_ok():
        pytest.skip("a GPU is present")
    from rtdub.render.cuda import CudaBlender

    with pytest.raises(BackendUnavailable):
        CudaBlender(face_mask(S))


@requires_gpu
def test_cuda_kernel_matches_harness(harness: HarnessBlender) -> None:
    from rtdub.render.cuda import CudaBlender

    gpu = CudaBlender(face_mask(S))
    try:
        for seed in range(12):
            frame, face, al = random_case(seed)
            offset = np.random.default_rng(seed).uniform(-10, 10, 3).astype(np.float32)
            a, b = frame.copy(), frame.copy()
            harness.paste_rgb(a, face, al, offset)
            gpu.paste_rgb(b, face, al, offset)
            assert np.abs(a.astype(np.int16) - b).max() <= TOL
            h, w = frame.shape[:2]
            y = frame[..., 0].copy()
            uv = frame[: h // 2, : w // 2, 1:].copy()
            y2, uv2 = y.copy(), uv.copy()
            harness.paste_nv12(y, uv, face, al, offset)
            gpu.paste_nv12(y2, uv2, face, al, offset)
            assert np.abs(y.astype(np.int16) - y2).max() <= TOL
            assert np.abs(uv.astype(np.int16) - uv2).max() <= TOL
    finally:
        gpu.close()


# ---- CudaBlender's host logic on an emulated pycuda ----------------------------------------
def test_cuda_blender_host_path_on_emulated_pycuda(harness: HarnessBlender, monkeypatch: pytest.MonkeyPatch) -> None:
    """CudaBlender's staging, pointers, pitches and launch arguments, run through the harness."""
    mods = fake_pycuda(harness_kernels(harness._lib))
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    from rtdub.render.cuda import CudaBlender

    gpu = CudaBlender(harness.mask)
    changed = 0
    for seed in range(8):
        frame, face, al = random_case(seed)
        offset = np.random.default_rng(seed).uniform(-10, 10, 3).astype(np.float32)
        a, b = frame.copy(), frame.copy()
        pa = harness.paste_rgb(a, face, al, offset)
        pb = gpu.paste_rgb(b, face, al, offset)
        assert pa == pb and (a == b).all()
        changed += int((b != frame).any())
        h, w = frame.shape[:2]
        y, uv = frame[..., 0].copy(), frame[: h // 2, : w // 2, 1:].copy()
        y2, uv2 = y.copy(), uv.copy()
        harness.paste_nv12(y, uv, face, al, offset)
        gpu.paste_nv12(y2, uv2, face, al, offset)
        assert (y == y2).all() and (uv == uv2).all()
    assert changed >= 4
    assert set(mods["pycuda.driver"].launches) == {"rtdub_blend_rgb", "rtdub_blend_luma", "rtdub_blend_chroma"}
    gpu.close()
