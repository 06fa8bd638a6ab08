"""High-resolution compositing (rtdub/render/hires.py): the generator's fields output, its parity
with torch, the equivalence with the generator's own face at the crop size, the sharpness it
buys at larger render sizes, and old bundles without the fields output."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub.backends import get_backend
from rtdub.backends.onnx import OnnxBackend
from rtdub.face import align
from rtdub.face.tracker import FaceTracker
from rtdub.measure import metrics, samples
from rtdub.model import DEFAULT_MODEL_DIR, load_bundle
from rtdub.render import hires
from rtdub.render.blend import face_mask, paste
from rtdub.render.hires import RenderSizeConfig, RenderSizer
from rtdub.render.pipeline import DubPipeline, PipelineConfig

from .factories import FACE_CENTRE, random_generator

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from engines.onnx_export import example_inputs, export_onnx, parity_outputs  # noqa: E402
from training.models import LipToFace  # noqa: E402

S = 96


def textured_face(size: int, seed: int = 0) -> np.ndarray:
    """A (size, size, 3) uint8 image with detail at every scale down to 2 px: the portrait
    under band-limited noise, so a resampled copy loses measurable Laplacian variance."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(samples.portrait(), (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 0.8)
    img += 60 * noise[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _upsample(img: np.ndarray, r: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part ``box`` of ``img`` (S, S, C <= 4) resampled to R px with the crops' geometry."""
    x0, y0, x1, y1 = box
    k = img.shape[0] / r
    m = np.array([[k, 0.0, k * x0], [0.0, k, k * y0]])
    return cv2.warpAffine(
        img, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )


def composite(
    reference: np.ndarray,
    fields: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """The definition hires.composite_into is held to: the (R, R, 3) face ``alpha *
    warp(reference, flow) + (1 - alpha) * colour`` as its own image, with flow and alpha
    bilinearly upsampled to R; with ``box`` only that part (the rest 0)."""
    r = reference.shape[0]
    s = fields.shape[1]
    box = box or (0, 0, r, r)
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(r, box[2]), min(r, box[3])
    f = np.asarray(fields, np.float32)
    motion = np.ascontiguousarray(f[0:3].transpose(1, 2, 0))  # flow x, flow y, alpha
    synth = np.ascontiguousarray(((1.0 - f[2:3]) * f[3:6] * 255.0).transpose(1, 2, 0))
    mo = _upsample(motion, r, (x0, y0, x1, y1))
    k = (s - 1) / 2 * (r / s)  # flow in grid units (align_corners=True at S): (S-1)/2 px at S, times R/S
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    map_x = mo[..., 0] * k + xs
    map_y = mo[..., 1] * k + ys
    warped = cv2.remap(np.asarray(reference, np.float32), map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
    warped *= mo[..., 2:3]
    warped += _upsample(synth, r, (x0, y0, x1, y1))
    out = np.zeros((r, r, 3), np.float32)
    out[y0:y1, x0:x1] = warped
    return out


@pytest.fixture(scope="module")
def generator() -> LipToFace:
    """A small random generator whose flow, mixing weight and colour all vary over the crop."""
    return random_generator(0.3)


@pytest.fixture(scope="module")
def gen_onnx(generator: LipToFace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "generator.onnx"
    export_onnx(generator, path, None)
    return path


def test_export_has_face_and_fields_with_parity(generator: LipToFace, gen_onnx: Path) -> None:
    m = onnx.load(str(gen_onnx))
    assert [o.name for o in m.graph.output] == ["face", "fields"]
    par = parity_outputs(generator, gen_onnx, 3)
    assert par["face"] < 1e-4 and par["fields"] < 1e-4, par
    # the fields really are what the face is made of, and they vary
    x = example_inputs(generator, 2, seed=3)
    with torch.no_grad():
        f = generator.fields(*x)
        face = generator(*x)
    torch.testing.assert_close(generator.compose(x[1], f), face)
    assert float(f[:, 0:2].abs().max()) > 0.01 and float(f[:, 2].std()) > 1e-3


def test_composite_at_the_crop_size_equals_the_generator(gen_onnx: Path) -> None:
    """At R = S, applying the fields with OpenCV gives the ONNX face, up to cv2.remap's
    1/32 px interpolation grid."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(gen_onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    ref = textured_face(S, seed=1).astype(np.float32) / 255
    pose = ref.copy()
    pose[face_mask(S).hidden] = 0
    feeds = {
        "pose": pose.transpose(2, 0, 1)[None],
        "reference": ref.transpose(2, 0, 1)[None].copy(),
        "units": rng.standard_normal((1, 5, 9)).astype(np.float32),
    }
    face, fields = sess.run(["face", "fields"], feeds)
    assert np.abs(fields[0, 0:2]).max() > 0.01  # a real flow, not the identity
    out = composite(ref * 255, fields[0])
    want = face[0].transpose(1, 2, 0) * 255
    err = np.abs(out - want)
    assert err.mean() < 0.3 and err.max() < 6.0, (err.mean(), err.max())
    # the box variant computes the same pixels inside the box
    box = (10, 40, 80, 90)
    part = composite(ref * 255, fields[0], box)
    np.testing.assert_allclose(part[40:90, 10:80], out[40:90, 10:80], atol=1e-3)
    assert not part[:40].any()


def test_resize_and_scaled_alignment_share_the_geometry() -> None:
    """A crop taken at R equals the S crop resampled to R, and paste-back at R puts the face
    where the S paste puts it."""
    frame = textured_face(512)
    al = align.Alignment(np.array([[0.3, 0.02, -10.0], [-0.02, 0.3, -20.0]]), S)
    big = hires.scaled(al, 288)
    small_crop = align.warp_to_crop(cv2.GaussianBlur(frame, (0, 0), 4), al).astype(np.float32)
    big_crop = align.warp_to_crop(cv2.GaussianBlur(frame, (0, 0), 4), big).astype(np.float32)
    up = hires.resize_crop(small_crop, 288)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(up[inner] - big_crop[inner]).mean() < 1.5
    assert hires.native_size(al) == pytest.approx(S / al.scale)
    assert hires.native_size(big) == pytest.approx(hires.native_size(al))


def _mouth_sharpness(render: int, frame: np.ndarray, al: align.Alignment, fields: np.ndarray) -> float:
    """Paste the fields applied to the frame's own crop at ``render`` px; mouth-box sharpness
    of the result over the input."""
    big = hires.scaled(al, render)
    ref = align.warp_to_crop(frame, big).astype(np.float32)
    face = composite(ref, fields)
    out = frame.copy()
    region = paste(out, face, big, face_mask(render))
    assert region is not None
    # a mouth box in the mask's core
    pts = align.apply(big.inverse, np.array([[0.35 * render, 0.72 * render], [0.65 * render, 0.88 * render]]))
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    return metrics.sharpness_ratio(out, frame, (x0, y0, x1, y1))


def test_hires_render_of_a_textured_face_is_sharper() -> None:
    """A face spanning ~380 px: the 96 px path loses most of the mouth's Laplacian variance,
    rendering at 288 px keeps much more of it. Fields of a mostly-copying generator (small
    flow, alpha 0.9, flat colour) as a trained one gives outside the mouth interior."""
    frame = textured_face(640, seed=2)
    al = align.Alignment(np.array([[S / 380, 0.0, -130 * S / 380], [0.0, S / 380, -100 * S / 380]]), S)
    rng = np.random.default_rng(0)
    fields = np.zeros((6, S, S), np.float32)
    flow = cv2.GaussianBlur(rng.standard_normal((S, S, 2)).astype(np.float32), (0, 0), 6)
    fields[0:2] = flow.transpose(2, 0, 1) * 0.01
    fields[2] = 0.9
    fields[3:6] = 0.5
    low = _mouth_sharpness(S, frame, al, fields)
    high = _mouth_sharpness(288, frame, al, fields)
    assert high > 1.5 * low, (low, high)
    assert high > 0.3, high


def _two_step(frame: np.ndarray, big: align.Alignment, ref: np.ndarray, fields: np.ndarray) -> np.ndarray:
    out = frame.copy()
    face = composite(ref, fields, interpolation=cv2.INTER_CUBIC)
    assert paste(out, face, big, face_mask(big.size), cv2.INTER_CUBIC) is not None
    return out


def _fused(frame: np.ndarray, big: align.Alignment, ref: np.ndarray, fields: np.ndarray) -> np.ndarray:
    out = frame.copy()
    assert hires.composite_into(out, ref, fields, big, face_mask(big.size), cv2.INTER_CUBIC) is not None
    return out


def test_composite_into_is_composite_and_paste_in_one_resampling() -> None:
    """The fused render puts the same face in the same place as composite-then-paste (a
    smooth face: the two differ only by interpolation), touches nothing outside the mask,
    and on a detailed face keeps more of the mouth's Laplacian variance (one resampling of
    the reference instead of two)."""
    al = align.Alignment(np.array([[S / 380, 0.01, -130 * S / 380], [-0.01, S / 380, -100 * S / 380]]), S)
    big = hires.scaled(al, 288)
    rng = np.random.default_rng(4)
    fields = np.zeros((6, S, S), np.float32)
    flow = cv2.GaussianBlur(rng.standard_normal((S, S, 2)).astype(np.float32), (0, 0), 6)
    fields[0:2] = flow.transpose(2, 0, 1) * (0.02 / np.abs(flow).max())
    fields[2] = 0.9
    fields[3:6] = rng.uniform(0.3, 0.7, size=(3, 1, 1))
    smooth = cv2.GaussianBlur(textured_face(640, seed=3), (0, 0), 3)
    ref = align.warp_to_crop(smooth, big).astype(np.float32)
    a, b = _two_step(smooth, big, ref, fields), _fused(smooth, big, ref, fields)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.mean() < 0.2 and diff.max() <= 6, (diff.mean(), diff.max())
    assert np.array_equal(b[~face_region(smooth, big)], smooth[~face_region(smooth, big)])
    # zero flow, weight 1: exactly a paste of the reference crop
    still = np.zeros_like(fields)
    still[2] = 1.0
    want = smooth.copy()
    paste(want, ref, big, face_mask(288), cv2.INTER_CUBIC)
    assert np.abs(_fused(smooth, big, ref, still).astype(np.int16) - want).max() <= 1

    sharp = textured_face(640, seed=5)
    ref = hires.crop(sharp, big).astype(np.float32)
    pts = align.apply(big.inverse, np.array([[0.35 * 288, 0.72 * 288], [0.65 * 288, 0.88 * 288]]))
    box = (*np.floor(pts.min(0)).astype(int), *np.ceil(pts.max(0)).astype(int))
    two = metrics.sharpness_ratio(_two_step(sharp, big, ref, fields), sharp, box)  # type: ignore[arg-type]
    one = metrics.sharpness_ratio(_fused(sharp, big, ref, fields), sharp, box)  # type: ignore[arg-type]
    assert one > 1.15 * two, (two, one)


def _detailed(
    frame: np.ndarray, big: align.Alignment, ref: np.ndarray, fields: np.ndarray, detail: float
) -> np.ndarray:
    out = frame.copy()
    assert hires.composite_into(out, ref, fields, big, face_mask(big.size), cv2.INTER_CUBIC, detail=detail) is not None
    return out


def test_detail_puts_back_the_texture_the_colour_term_mixes_out() -> None:
    """A copying generator (zero flow, alpha 0.92, colour = the reference at S px): without
    the detail term the mouth keeps ~alpha of the reference's fine texture; with it the
    result is sharper and closer to pasting the reference itself. Where alpha is 1 (nothing
    mixed out) or under the fade-in (the generator paints), the term changes nothing."""
    al = align.Alignment(np.array([[S / 380, 0.01, -130 * S / 380], [-0.01, S / 380, -100 * S / 380]]), S)
    big = hires.scaled(al, 288)
    sharp = textured_face(640, seed=6)
    ref = hires.crop(sharp, big).astype(np.float32)
    fields = np.zeros((6, S, S), np.float32)
    fields[2] = 0.92
    fields[3:6] = (hires.resize_crop(np.ascontiguousarray(ref), S) / 255.0).transpose(2, 0, 1)
    pts = align.apply(big.inverse, np.array([[0.35 * 288, 0.72 * 288], [0.65 * 288, 0.88 * 288]]))
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int)
    still = np.zeros_like(fields)
    still[2] = 1.0
    target = _detailed(sharp, big, ref, still, 0.0)[y0:y1, x0:x1].astype(np.float64)
    plain, full = (_detailed(sharp, big, ref, fields, g) for g in (0.0, 1.0))
    s_plain, s_full = (metrics.sharpness_ratio(o, sharp, (x0, y0, x1, y1)) for o in (plain, full))
    e_plain, e_full = (np.abs(o[y0:y1, x0:x1] - target).mean() for o in (plain, full))
    assert s_full > 1.1 * s_plain, (s_plain, s_full)
    assert e_full < 0.8 * e_plain, (e_plain, e_full)
    # alpha 1: nothing was mixed out; alpha under the fade-in: the generator's own colour
    for a in (1.0, hires.DETAIL_ALPHA[0] - 0.05):
        f = fields.copy()
        f[2] = a
        assert np.array_equal(_detailed(sharp, big, ref, f, 0.0), _detailed(sharp, big, ref, f, 1.0)), a


def test_detail_weight_fades_in_over_the_mixing_weight() -> None:
    lo, hi = hires.DETAIL_ALPHA
    a = np.array([0.0, lo, (lo + hi) / 2, hi, 0.95, 1.0], np.float32)
    w = hires.detail_weight(a, 1.0)
    assert w[0] == 0 and w[1] == 0 and w[-1] == 0
    assert w[2] == pytest.approx(0.5 * (1 - (lo + hi) / 2))
    assert w[3] == pytest.approx(1 - hi) and w[4] == pytest.approx(0.05)
    assert np.allclose(hires.detail_weight(a, 0.5), 0.5 * w)
    with pytest.raises(ValueError, match="detail"):
        RenderSizeConfig(detail=1.5)


def face_region(frame: np.ndarray, al: align.Alignment) -> np.ndarray:
    """Frame pixels the mask at ``al`` can touch (its weight > 0 there after the warp)."""
    h, w = frame.shape[:2]
    inv = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(face_mask(al.size).soft, al.matrix, (w, h), flags=inv, borderValue=0.0) > 0


def test_render_sizer_follows_the_face_with_hysteresis() -> None:
    sizer = RenderSizer(RenderSizeConfig(), S)

    def al_for(native: float) -> align.Alignment:
        k = S / native
        return align.Alignment(np.array([[k, 0.0, 0.0], [0.0, k, 0.0]]), S)

    assert sizer.size_for(al_for(60)) == S  # small faces stay at the crop size
    assert sizer.size_for(al_for(200)) == 192
    assert sizer.size_for(al_for(215)) == 192  # within a step: no change
    assert sizer.size_for(al_for(260)) == 256
    assert sizer.size_for(al_for(1000)) == 384  # capped
    assert RenderSizer(RenderSizeConfig(size=S), S).size_for(al_for(1000)) == S
    with pytest.raises(ValueError):
        RenderSizer(RenderSizeConfig(size=50), S)
    with pytest.raises(ValueError, match="kernel"):
        RenderSizeConfig(kernel="nearest")
    assert RenderSizeConfig(kernel="lanczos").interpolation == cv2.INTER_LANCZOS4


def _face_only_bundle(root: Path) -> Path:
    """The default bundle with its generator cut back to the ``face`` output: a bundle
    exported before the fields existed."""
    shutil.copytree(DEFAULT_MODEL_DIR, root)
    m = onnx.load(str(root / "generator.onnx"))
    keep = [o for o in m.graph.output if o.name == "face"]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    onnx.save(m, str(root / "generator.onnx"))
    return root


def _dub(bundle_dir: Path | None, render: RenderSizeConfig, frames: list[np.ndarray]) -> tuple[list[int], np.ndarray]:
    bundle = load_bundle(bundle_dir)
    backend = get_backend("onnx", bundle)
    units = np.tile(bundle.closed_units, (1, 1))[0]
    sizes = []
    with FaceTracker() as tr:
        pipe = DubPipeline(bundle, backend, tr, PipelineConfig(render=render))
        out = frames[0]
        for i, f in enumerate(frames):
            out = f.copy()
            res = pipe.process(out, i / 25, units=units + (i % 5) * 0.3)
            assert res.face
            sizes.append(res.render_size)
    return sizes, out


@pytest.fixture(scope="module")
def big_frames() -> list[np.ndarray]:
    img = cv2.resize(samples.portrait(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    centre = (FACE_CENTRE[0] * 2, FACE_CENTRE[1] * 2)
    return list(samples.head_motion(img, 30, 25.0, centre=centre))


def test_pipeline_renders_hires_and_old_bundles_at_the_crop_size(tmp_path: Path, big_frames: list[np.ndarray]) -> None:
    """The default bundle composites at R > S on a large face and stays local to the mask;
    a bundle without the fields output loads and renders at S as before."""
    bundle = load_bundle()
    if not OnnxBackend(bundle).has_fields:
        pytest.skip("the default bundle has no fields output")
    sizes, hi = _dub(None, RenderSizeConfig(), big_frames)
    assert sizes[-1] > S
    old = _face_only_bundle(tmp_path / "old")
    assert not OnnxBackend(load_bundle(old)).has_fields
    sizes_old, lo = _dub(old, RenderSizeConfig(), big_frames)
    assert set(sizes_old) == {S}
    forced, lo2 = _dub(None, RenderSizeConfig(size=S), big_frames)
    assert set(forced) == {S}
    np.testing.assert_array_equal(lo, lo2)  # render size S is exactly the old path
    # the mouth of the hi-res render carries more detail than the 96 px one
    with FaceTracker() as tr:
        obs = tr.track(big_frames[-1], 0.0)
    assert obs is not None
    from rtdub.face.lipunits import LIP_IDX

    box = metrics.mouth_box(obs.landmarks, LIP_IDX)
    assert metrics.sharpness_ratio(hi, big_frames[-1], box) > metrics.sharpness_ratio(lo, big_frames[-1], box)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--render-size", "-1"),
        ("--render-size", "50"),
        ("--reference-opening", "1.5"),
        ("--reference-opening", "-0.1"),
        ("--detail", "1.5"),
        ("--detail", "nan"),
    ],
)
def test_dub_rejects_bad_render_options(
    talking_clip: Path, dubbed_wav: Path, tmp_path: Path, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A render size below the crop size, a reference opening or detail outside [0, 1]: one line, exit
    2, no output; an unknown --kernel is argparse's choice error."""
    from rtdub.cli.main import main

    out = tmp_path / "out.mp4"
    argv = ["dub", "--video", str(talking_clip), "--audio", str(dubbed_wav), "-o", str(out), "-q"]
    assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--kernel", "nearest"])
    assert exc.value.code == 2 and "--kernel" in capsys.readouterr().err
    assert not out.exists()
