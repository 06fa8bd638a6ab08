"""int8 quantization of the generator (engines/quantize.py): a small random-init generator is
exported, calibrated on face crops made here, quantized to QDQ int8 and checked against fp32.

Tolerance (int8 vs fp32, outputs in [0, 1]): mean abs ≤ 0.005 (about 1.3 levels of 255) and max
abs ≤ 0.1 over every pixel. Loose on purpose: the calibration set is tiny and a random-init
network has no trained activation ranges. Measured here: mean abs ≤ 3e-4, max abs ≤ 0.008; the
shipped generator, calibrated on 256 real crops, measures 0.0018 mean abs (49 dB PSNR) against
its fp32 twin on held-out clips, with a few flow outliers up to 0.27.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from engines import quantize  # noqa: E402
from engines.calibration import generator_samples, list_shards  # noqa: E402
from engines.onnx_export import export_onnx  # noqa: E402
from rtdub.backends import BackendConfig, get_backend  # noqa: E402
from rtdub.measure import samples  # noqa: E402
from rtdub.model import DEFAULT_MODEL_DIR, load_bundle  # noqa: E402
from training.models import A2LConfig, AudioToLip  # noqa: E402

from .factories import random_generator  # noqa: E402

MEAN_TOL = 0.005
MAX_TOL = 0.1
S = 96


def face_crops(n: int, seed: int) -> np.ndarray:
    """(n, S, S, 3) uint8: the sample portrait's face under small random similarity jitter."""
    rng = np.random.default_rng(seed)
    img = samples.portrait()
    out = np.empty((n, S, S, 3), np.uint8)
    for i in range(n):
        ang, sc = rng.uniform(-8, 8), rng.uniform(0.9, 1.1) * S / 150
        m = cv2.getRotationMatrix2D((230 + rng.uniform(-6, 6), 140 + rng.uniform(-6, 6)), ang, sc)
        m[:, 2] += np.array([S / 2, S / 2]) - np.array([230, 140])
        out[i] = cv2.warpAffine(img, m, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    # the head and the FiLM layers start at zero: randomised so that the output depends on
    # the quantized encoder, decoder and units MLP (checked below)
    gen = random_generator(0.5)
    export_onnx(gen, root / "generator.onnx", None)
    export_onnx(AudioToLip(A2LConfig(width=16)).eval(), root / "a2l.onnx", None)
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())  # the shipped geometry/units
    manifest["a2l"] = {k: v for k, v in manifest["a2l"].items() if k not in ("baseline", "fused")}
    manifest["a2l"]["file"] = "a2l.onnx"  # this bundle's own audio stage, not the shipped fused one
    (root / "manifest.json").write_text(json.dumps(manifest))
    shutil.copyfile(DEFAULT_MODEL_DIR / "phonetic.json", root / "phonetic.json")  # which the manifest names
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    for k in range(2):
        n = 40
        np.savez(d / f"clip{k}.npz", crops=face_crops(n, k), times=np.arange(n) / 25.0, valid=np.ones(n, bool))
    return d


def test_quantize_cli_writes_a_working_int8_bundle(tmp_path: Path, fp32_bundle: Path, shards: Path) -> None:
    out = tmp_path / "int8"
    argv = ["--model", str(fp32_bundle), "--shards", str(shards), "--out", str(out), "--samples", "32"]
    assert quantize.main([*argv, "--eval", str(shards), "--eval-samples", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a2l.onnx", "generator.onnx", "manifest.json", "phonetic.json"]
    rec = json.loads((out / "manifest.json").read_text())["quantization"]["generator"]
    assert rec["format"] == "QDQ" and rec["weights"] == "int8 per-channel" and rec["calibration_samples"] == 32
    assert rec["source_sha256"] == quantize.sha256(fp32_bundle / "generator.onnx")
    assert rec["eval"]["mean_abs"] <= MEAN_TOL

    # QDQ nodes, per-channel weight scales, an unchanged interface
    m = onnx.load(str(out / "generator.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {t.name: t for t in m.graph.initializer}
    per_channel = [
        n for n in m.graph.node
        if n.op_type == "DequantizeLinear" and n.input[1] in inits and len(inits[n.input[1]].dims) == 1
        and inits[n.input[1]].dims[0] > 1
    ]  # fmt: skip
    assert per_channel, "no per-channel weight scales"
    ref = onnx.load(str(fp32_bundle / "generator.onnx"))
    assert [i.name for i in m.graph.input] == [i.name for i in ref.graph.input]
    assert [o.name for o in m.graph.output] == [o.name for o in ref.graph.output]

    # it runs in the CPU backend at batch 1 and 5 and stays near fp32 on real-looking inputs
    b8, b32 = load_bundle(out), load_bundle(fp32_bundle)
    be8 = get_backend("onnx", b8, BackendConfig(threads=1))
    be32 = get_backend("onnx", b32, BackendConfig(threads=1))
    for batch in (1, 5):
        for smp in generator_samples(list_shards(shards), b32, 3, batch=batch, seed=7):
            y8 = be8.generate(smp.pose, smp.reference, smp.units)
            y32 = be32.generate(smp.pose, smp.reference, smp.units)
            assert y8.shape == y32.shape == (batch, 3, S, S) and y8.dtype == np.float32
            d = np.abs(y8 - y32)
            assert d.mean() <= MEAN_TOL and d.max() <= MAX_TOL, (batch, d.mean(), d.max())
            # the quantized path matters: other units move the output far more than int8 does
            moved = be32.generate(smp.pose, smp.reference, smp.units[::-1, ::-1].copy() * -1)
            assert np.abs(moved - y32).mean() > 5 * d.mean()


def test_calibration_samples_follow_the_pipeline(fp32_bundle: Path, shards: Path) -> None:
    b = load_bundle(fp32_bundle)
    smp = generator_samples(list_shards(shards), b, 6, batch=2, seed=1)
    assert len(smp) == 6
    s = smp[0]
    assert s.pose.shape == s.reference.shape == (2, 3, S, S) and s.units.shape == (2, b.context, b.n_units)
    from rtdub.render.blend import face_mask

    hidden = face_mask(S).hidden
    assert (s.pose[:, :, hidden] == 0).all() and s.pose[:, :, ~hidden].mean() > 0.05
    assert 0 <= s.reference.min() and s.reference.max() <= 1
    np.testing.assert_allclose(s.pose[0][:, ~hidden], s.target[0].transpose(2, 0, 1)[:, ~hidden] / 255, atol=1e-6)


def test_quantize_cli_errors(tmp_path: Path, fp32_bundle: Path) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    assert quantize.main(["--model", str(fp32_bundle), "--shards", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
