"""The fused audio drive (training/train_visemes.py): one ONNX graph mixing the audio-to-lip
model with a viseme recogniser's mapped units, and the runtime's choice between it and the
audio-to-lip model alone (``--audio-model``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rtdub.engine import EngineConfig
from rtdub.exceptions import InputError
from rtdub.model import DEFAULT_MODEL_DIR, load_bundle

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")


def _recogniser(seed: int = 0) -> torch.nn.Module:
    from rtdub.drive.phones import N_CLASSES
    from training.models import A2LConfig, build_a2l

    torch.manual_seed(seed)
    return build_a2l(A2LConfig(width=16, units=N_CLASSES + 5)).eval()


def _fitted(n_units: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from rtdub.drive.phones import N_CLASSES

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (N_CLASSES + 1, n_units)).astype(np.float32)
    return w, rng.uniform(1.0, 2.0, n_units).astype(np.float32), rng.normal(0, 0.1, n_units).astype(np.float32)


def _copy_default(tmp: Path) -> Path:
    basis = tmp / "basis"
    shutil.copytree(DEFAULT_MODEL_DIR, basis)
    man = json.loads((basis / "manifest.json").read_text())
    if man["a2l"].get("baseline"):  # the shipped bundle may itself be fused: start from its base model
        man["a2l"]["file"] = man["a2l"].pop("baseline")
        man["a2l"].pop("fused", None)
        (basis / "manifest.json").write_text(json.dumps(man))
    return basis


def test_the_fused_graph_mixes_both_models_by_the_weight(tmp_path: Path) -> None:
    from training.visemes import VisemeMap, export_fused

    basis = _copy_default(tmp_path)
    bundle = load_bundle(basis)
    rec, fitted = _recogniser(), _fitted(bundle.n_units)
    out = tmp_path / "a2l_fused.onnx"
    err = export_fused([rec], [fitted], basis, 0.3, out)
    assert err < 1e-4
    # against an independent computation: the base graph and the torch map, mixed by hand
    x = np.random.default_rng(5).normal(0, 1, (3, bundle.mel_window, 80)).astype(np.float32)
    la = np.array([[0.0], [0.04], [0.12]], np.float32)
    feeds = {"mel": x, "lookahead": la}
    base = onnxruntime.InferenceSession(str(bundle.a2l_path)).run(None, feeds)[0]
    with torch.no_grad():
        mapped = VisemeMap(rec, *fitted)(torch.from_numpy(x), torch.from_numpy(la)).numpy()
    got = onnxruntime.InferenceSession(str(out)).run(None, feeds)[0]
    np.testing.assert_allclose(got, 0.7 * base + 0.3 * mapped, atol=1e-4)
    assert not np.allclose(got, base, atol=1e-3)  # the recogniser does change the units


def _fused_bundle(tmp: Path) -> tuple[Path, Path]:
    """(the plain basis bundle, a fused bundle made from it with a random recogniser)."""
    from training.visemes import export_fused, write_bundle

    basis = _copy_default(tmp)
    fused = tmp / "a2l_fused.onnx"
    export_fused([_recogniser()], [_fitted(load_bundle(basis).n_units)], basis, 0.5, fused)
    out = tmp / "fused_bundle"
    write_bundle(basis, fused, out, {"weight": 0.5})
    return basis, out


def test_a_fused_bundle_keeps_its_base_model_and_the_engine_chooses(tmp_path: Path) -> None:
    basis, out = _fused_bundle(tmp_path)
    bundle = load_bundle(out)
    assert bundle.fused and bundle.a2l_path.name == "a2l_fused.onnx"
    base = bundle.audio_model("base")
    assert base.a2l_path.name == "a2l.onnx" and not base.fused
    assert bundle.audio_model("fused") is bundle
    plain = load_bundle(basis)
    assert not plain.fused and plain.audio_model("base") is plain  # nothing to choose
    # the engine configuration picks the variant before any backend exists
    cfg = EngineConfig.offline()
    assert cfg.audio_model == "fused"
    assert EngineConfig(model=out, audio_model="base").load_bundle().a2l_path.name == "a2l.onnx"
    assert EngineConfig(model=out).load_bundle().a2l_path.name == "a2l_fused.onnx"
    with pytest.raises(InputError, match="--audio-model"):
        EngineConfig(model=out, audio_model="loud").check()


def test_a_fused_bundle_without_its_base_file_is_refused(tmp_path: Path) -> None:
    from rtdub.exceptions import ModelError

    _, out = _fused_bundle(tmp_path)
    (out / "a2l.onnx").unlink()
    with pytest.raises(ModelError, match="a2l.onnx"):
        load_bundle(out)


def test_the_audio_model_flag_reaches_the_engine_config() -> None:
    import argparse

    from rtdub.cli.options import add_engine_options, engine_config

    p = argparse.ArgumentParser()
    add_engine_options(p, EngineConfig.offline())
    assert engine_config(p.parse_args([]), EngineConfig.offline()).audio_model == "fused"
    assert engine_config(p.parse_args(["--audio-model", "base"]), EngineConfig.offline()).audio_model == "base"
    with pytest.raises(SystemExit):
        p.parse_args(["--audio-model", "other"])
