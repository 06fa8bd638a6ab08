"""The TensorRT path: clear errors without TensorRT or a GPU, the engine cache keying and the
profiles everywhere; on a GPU machine, engine builds and TensorRT-vs-onnxruntime parity.

Parity tolerances on a GPU (generator outputs in [0, 1], max abs): fp32 engines 1e-3 (TF32
convolutions), fp16 2e-2, int8 0.15 with a mean abs ≤ 0.01.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rtdub.backends import get_backend
from rtdub.backends.tensorrt import EngineSpec, GpuInfo, TensorRTOptions, cached_engine, engine_key, import_tensorrt
from rtdub.exceptions import BackendUnavailable
from rtdub.model import load_bundle

from .fake_gpu import engine_files, fake_pycuda, fake_tensorrt, harness_kernels
from .gpu import requires_gpu

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
GPU = GpuInfo("NVIDIA A100-SXM4-80GB", "8.0", 0)


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed")
def test_get_backend_without_tensorrt_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        get_backend("tensorrt", load_bundle())


def test_wrong_tensorrt_or_missing_pycuda_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "11.0.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(BackendUnavailable, match="needs 10.x"):
        get_backend("tensorrt", load_bundle())
    fake.__version__ = "10.9.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", None)  # an import of pycuda now fails
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(BackendUnavailable, match="pycuda"):
        get_backend("tensorrt", load_bundle())


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed")
def test_cli_dub_with_tensorrt_backend_exits_2_with_one_line(
    talking_clip: Path, dubbed_wav: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, "-m", "rtdub", "dub", "--video", str(talking_clip), "--audio", str(dubbed_wav)]
    res = subprocess.run([*cmd, "-o", str(out), "--backend", "tensorrt"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtdub: error:") and "tensorrt" in lines[0].lower(), res.stderr
    assert not out.exists()


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed")
def test_build_trt_without_tensorrt_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from engines import build_trt

    assert build_trt.main(["--model", str(ROOT / "engines" / "default")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorrt" in err[0]


def test_profiles_cover_every_batch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EngineSpec("fp16", (1, 5)).profiles() == [(1, 1, 1), (2, 5, 5)]
    assert EngineSpec("int8", (1, 4, 8)).profiles() == [(1, 1, 1), (2, 4, 4), (5, 8, 8)]
    for bad in [(), (5, 1), (0, 5), (1, 1)]:
        with pytest.raises(ValueError):
            EngineSpec("fp16", bad)
    with pytest.raises(ValueError):
        EngineSpec("bf16")
    monkeypatch.setenv("RTDUB_TRT_PRECISION", "int8")
    monkeypatch.setenv("RTDUB_TRT_BUILD", "0")
    assert TensorRTOptions.from_env() == TensorRTOptions(precision="int8", build=False)
    monkeypatch.setenv("RTDUB_TRT_PRECISION", "int4")
    with pytest.raises(BackendUnavailable):
        TensorRTOptions.from_env()


def test_engine_cache_key_and_lookup(tmp_path: Path) -> None:
    model = tmp_path / "generator.onnx"
    model.write_bytes(b"model v1")
    spec = EngineSpec("fp16", (1, 5))
    k1 = engine_key(model, spec, GPU, "10.9.0")
    name = k1.filename()
    assert name.startswith("generator-") and "fp16" in name and "b1_5" in name
    assert "nvidia-a100-sxm4-80gb" in name and "sm80" in name and "trt10.9.0" in name
    assert k1.model_sha256[:16] in name
    # any change of model bytes, precision, profiles, GPU or TensorRT gives another engine file
    others = [
        engine_key(model, EngineSpec("int8", (1, 5)), GPU, "10.9.0"),
        engine_key(model, EngineSpec("fp16", (1, 4)), GPU, "10.9.0"),
        engine_key(model, spec, GpuInfo("NVIDIA H100 PCIe", "9.0", 0), "10.9.0"),
        engine_key(model, spec, GPU, "10.10.0"),
    ]
    model.write_bytes(b"model v2")
    others.append(engine_key(model, spec, GPU, "10.9.0"))
    assert len({name, *(o.filename() for o in others)}) == 6

    trt = types.SimpleNamespace(__version__="10.9.0")
    with pytest.raises(BackendUnavailable, match="engines.build_trt"):
        cached_engine(trt, model, spec, GPU, tmp_path, build=False)
    with pytest.raises(BackendUnavailable, match="--shards"):
        cached_engine(trt, model, EngineSpec("int8"), GPU, tmp_path, build=True)
    cached = tmp_path / engine_key(model, spec, GPU, "10.9.0").filename()
    cached.write_bytes(b"plan")
    assert cached_engine(trt, model, spec, GPU, tmp_path, build=False) == cached  # no build, no tensorrt call


# ---- on a GPU with TensorRT -----------------------------------------------------------------
@requires_gpu
@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-3), ("fp16", 2e-2)])
def test_tensorrt_matches_onnxruntime(tmp_path: Path, precision: str, tol: float) -> None:
    import_tensorrt()
    bundle = load_bundle()
    from rtdub.backends.onnx import OnnxBackend
    from rtdub.backends.tensorrt import TensorRTBackend

    trt_be = TensorRTBackend(bundle, options=TensorRTOptions(precision=precision, cache_dir=tmp_path))
    ort_be = OnnxBackend(bundle)
    rng = np.random.default_rng(0)
    s = bundle.crop_size
    try:
        for batch in (1, 3, 5):
            pose = rng.random((batch, 3, s, s), np.float32)
            ref = rng.random((batch, 3, s, s), np.float32)
            units = rng.standard_normal((batch, bundle.context, bundle.n_units)).astype(np.float32)
            a = trt_be.generate(pose, ref, units)
            b = ort_be.generate(pose, ref, units)
            assert a.shape == b.shape and np.abs(a - b).max() <= tol
            mel = rng.uniform(-4, 4, (batch, bundle.mel_window, 80)).astype(np.float32)
            la = np.full((batch, 1), 0.1, np.float32)
            assert np.abs(trt_be.audio_to_lip(mel, la) - ort_be.audio_to_lip(mel, la)).max() <= 1e-3
        trt_be.reset()
    finally:
        trt_be.close()
    # the second start deserializes the cached engines instead of building
    engines = sorted(tmp_path.glob("*.engine"))
    assert len(engines) == 2 and len(list(tmp_path.glob("timing-*.cache"))) == 1
    mtimes = [e.stat().st_mtime for e in engines]
    TensorRTBackend(bundle, options=TensorRTOptions(precision=precision, cache_dir=tmp_path, build=False)).close()
    assert [e.stat().st_mtime for e in engines] == mtimes


@requires_gpu
def test_build_trt_int8_with_calibration(tmp_path: Path) -> None:
    import_tensorrt()
    from engines import build_trt

    from .test_quantize import face_crops

    shards = tmp_path / "shards"
    shards.mkdir()
    np.savez(shards / "c.npz", crops=face_crops(60, 0), times=np.arange(60) / 25.0, valid=np.ones(60, bool))
    cache = tmp_path / "cache"
    argv = ["--precision", "int8", "--shards", str(shards), "--calib-samples", "50", "--cache-dir", str(cache)]
    assert build_trt.main(argv) == 0
    assert len(list(cache.glob("calib-*.cache"))) == 1 and len(list(cache.glob("generator-*-int8-*.engine"))) == 1
    from rtdub.backends.onnx import OnnxBackend
    from rtdub.backends.tensorrt import TensorRTBackend

    bundle = load_bundle()
    be = TensorRTBackend(bundle, options=TensorRTOptions(precision="int8", cache_dir=cache, build=False))
    try:
        from engines.calibration import generator_samples, list_shards

        ort_be = OnnxBackend(bundle)
        for smp in generator_samples(list_shards(shards), bundle, 2, batch=5, seed=3):
            got = be.generate(smp.pose, smp.reference, smp.units)
            d = np.abs(got - ort_be.generate(smp.pose, smp.reference, smp.units))
            assert d.max() <= 0.15 and d.mean() <= 0.01
    finally:
        be.close()


# ---- the whole TensorRT path on emulated tensorrt + pycuda ----------------------------------
@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    """tensorrt and pycuda stand-ins (tests/fake_gpu.py): engines run the ONNX files with
    onnxruntime, device memory is host memory. Checks the backend's and the builder's logic."""
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name, mod in fake_pycuda().items():
        monkeypatch.setitem(sys.modules, name, mod)
    return trt


def test_backend_on_emulated_tensorrt(emulated: types.ModuleType, tmp_path: Path) -> None:
    from rtdub.backends.onnx import OnnxBackend
    from rtdub.backends.tensorrt import TensorRTBackend

    bundle = load_bundle()
    be = TensorRTBackend(bundle, options=TensorRTOptions(precision="fp16", cache_dir=tmp_path))
    assert len(engine_files(tmp_path)) == 2 and len(list(tmp_path.glob("*.json"))) == 2
    assert len(list(tmp_path.glob("timing-emulated-gpu-sm86-trt10.9.0.cache"))) == 1
    gen_plan = next(b for b in emulated.builds if b["onnx"].endswith("generator.onnx"))
    assert gen_plan["flags"] == ["fp16"]
    batch_dims = [[lo[0], opt[0], hi[0]] for lo, opt, hi in (prof[0] for prof in gen_plan["profiles"])]
    assert batch_dims == [[1, 1, 1], [2, 5, 5]]
    ref = OnnxBackend(bundle)
    rng = np.random.default_rng(0)
    s = bundle.crop_size
    for batch in (1, 3, 5, 1):
        pose = rng.random((batch, 3, s, s), np.float32)
        refc = rng.random((batch, 3, s, s), np.float32)
        units = rng.standard_normal((batch, bundle.context, bundle.n_units)).astype(np.float32)
        out = be.generate(pose, refc, units)
        np.testing.assert_allclose(out, ref.generate(pose, refc, units), atol=1e-4)  # unfused vs fused ORT graph
        mel = rng.uniform(-4, 4, (batch, bundle.mel_window, 80)).astype(np.float32)
        la = np.full((batch, 1), 0.1, np.float32)
        np.testing.assert_allclose(be.audio_to_lip(mel, la), ref.audio_to_lip(mel, la), atol=1e-4)
    with pytest.raises(ValueError, match="exceeds"):
        be.generate(*(np.zeros((6, *x), np.float32) for x in ((3, s, s), (3, s, s), (bundle.context, bundle.n_units))))
    be.reset()
    be.close()
    be.close()  # idempotent
    n = len(emulated.builds)
    # cached: a second backend deserializes and builds nothing, even with building disabled
    TensorRTBackend(bundle, options=TensorRTOptions(precision="fp16", cache_dir=tmp_path, build=False)).close()
    assert len(emulated.builds) == n
    # INT8 is never built on the fly
    with pytest.raises(BackendUnavailable, match="--shards"):
        TensorRTBackend(bundle, options=TensorRTOptions(precision="int8", cache_dir=tmp_path))


def test_build_trt_int8_on_emulated_tensorrt(emulated: types.ModuleType, tmp_path: Path) -> None:
    from engines import build_trt
    from rtdub.backends.tensorrt import TensorRTBackend

    from .test_quantize import face_crops

    shards = tmp_path / "shards"
    shards.mkdir()
    np.savez(shards / "c.npz", crops=face_crops(30, 0), times=np.arange(30) / 25.0, valid=np.ones(30, bool))
    cache = tmp_path / "cache"
    argv = ["--precision", "fp16", "int8", "--shards", str(shards), "--calib-samples", "20", "--cache-dir", str(cache)]
    assert build_trt.main(argv) == 0
    names = engine_files(cache)
    assert len(names) == 3 and sum("-int8-" in n for n in names) == 1 and sum("-fp16-" in n for n in names) == 1
    calib = list(cache.glob("calib-generator-*-n20-s0.cache"))
    assert len(calib) == 1 and calib[0].read_bytes() == b"calibration table"
    int8_plan = next(b for b in emulated.builds if "int8" in b["flags"])
    assert int8_plan["calibrated"] and "fp16" in int8_plan["flags"]
    n = len(emulated.builds)
    assert build_trt.main(argv) == 0  # everything cached: nothing rebuilt
    assert len(emulated.builds) == n
    assert build_trt.main([*argv, "--force"]) == 0  # rebuilt, the calibration table is reused
    assert len(emulated.builds) == n + 3
    be = TensorRTBackend(load_bundle(), options=TensorRTOptions(precision="int8", cache_dir=cache, build=False))
    be.close()


def test_gpu_benchmark_on_emulated_gpu(
    emulated: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks.gpu end to end: its rows, its JSON, and the kernel parity line."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ is absent")
    from benchmarks import gpu as bench
    from rtdub.render.blend import face_mask
    from rtdub.render.cuda.harness import HarnessBlender, build_harness

    lib = HarnessBlender(face_mask(96), build_harness(tmp_path / "h"))._lib
    for name, mod in fake_pycuda(harness_kernels(lib)).items():
        monkeypatch.setitem(sys.modules, name, mod)
    out = tmp_path / "gpu.json"
    argv = [
        "--cache-dir",
        str(tmp_path / "c"),
        "--runs",
        "3",
        "--warmup",
        "1",
        "--frame",
        "320x240",
        "--json",
        str(out),
    ]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())
    eng = {(x["model"], x["precision"], x["batch"], x["timing"]) for x in r["results"] if x["kind"] == "engine"}
    assert (
        ("generator", "fp16", 5, "gpu") in eng
        and ("generator", "fp16", 1, "e2e") in eng
        and ("a2l", "fp32", 1, "gpu") in eng
    )
    assert any("int8" in s for s in r["skipped"])  # no INT8 engine was built
    kern = {(x["format"], x["timing"]) for x in r["results"] if x["kind"] == "kernel"}
    assert kern == {("rgb", "gpu"), ("rgb", "host"), ("nv12", "gpu")}
    assert r["kernel_max_abs_vs_paste"] == 0
