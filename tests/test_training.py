"""Training system end to end on generated media: prepare -> train both stages -> export ->
the exported bundle dubs a clip. Plus export parity (torch vs onnxruntime)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.onnx_export import export_onnx, parity  # noqa: E402
from rtdub.dub import DubOptions, dub_file  # noqa: E402
from rtdub.engine import EngineConfig  # noqa: E402
from rtdub.model import load_bundle  # noqa: E402
from training import prepare, train_a2l, train_gen  # noqa: E402
from training.models import A2LConfig, AudioToLip, ContextA2L, GenConfig, LipToFace  # noqa: E402

from .factories import speechlike, talking_clip  # noqa: E402

PARITY_TOL = 1e-4  # float32 torch vs onnxruntime, max abs over outputs in [0, 1] / unit scale


@pytest.mark.parametrize(("batch", "full_colour"), [(None, False), (1, False), (5, False), (None, True)])
def test_generator_export_parity(tmp_path: Path, batch: int | None, full_colour: bool) -> None:
    torch.manual_seed(0)
    m = LipToFace(GenConfig(base=8, full_colour=full_colour)).eval()
    for p in m.parameters():  # non-trivial weights (the head starts at zero)
        p.data.normal_(0, 0.05)
    f = tmp_path / "g.onnx"
    export_onnx(m, f, batch)
    err = parity(m, f, batch or 3)
    assert err < PARITY_TOL, err


def test_full_colour_head_starts_as_the_half_resolution_colour() -> None:
    """The full-resolution colour head is a residual that starts at zero: with the same
    weights elsewhere, the fields equal the half-resolution model's; once it has weights it
    changes the colour only."""
    torch.manual_seed(0)
    half = LipToFace(GenConfig(base=8)).eval()
    full = LipToFace(GenConfig(base=8, full_colour=True)).eval()
    for p in half.parameters():
        p.data.normal_(0, 0.05)
    missing = full.load_state_dict(half.state_dict(), strict=False)
    assert all(k.startswith("colour_head.") for k in missing.missing_keys) and not missing.unexpected_keys
    pose, ref = torch.rand(2, 3, 96, 96), torch.rand(2, 3, 96, 96)
    units = torch.randn(2, 5, 9)
    with torch.no_grad():
        a, b = half.fields(pose, ref, units), full.fields(pose, ref, units)
        assert torch.equal(a, b)
        assert full.colour_head is not None
        for p in full.colour_head.parameters():
            p.data.normal_(0, 0.2)
        c = full.fields(pose, ref, units)
    assert torch.equal(c[:, :3], a[:, :3])  # flow and alpha untouched
    assert not torch.allclose(c[:, 3:], a[:, 3:], atol=1e-3)


def test_a2l_export_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = AudioToLip(A2LConfig(width=32)).eval()
    f = tmp_path / "a.onnx"
    export_onnx(m, f, None)
    assert parity(m, f, 4) < PARITY_TOL


def test_context_a2l_export_parity(tmp_path: Path) -> None:
    """The CALS audio stage (1.3 s window, dilated convs, self-attention) exports too."""
    torch.manual_seed(0)
    m = ContextA2L(A2LConfig.for_arch("cals").replace(width=32)).eval()
    f = tmp_path / "c.onnx"
    export_onnx(m, f, None)
    assert parity(m, f, 4) < PARITY_TOL


def test_export_refuses_a_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engines import export
    from training.common import save_checkpoint

    run = tmp_path / "teacher"
    run.mkdir()
    cfg = A2LConfig.for_arch("teacher").replace(width=16)
    m = AudioToLip(cfg)
    save_checkpoint(run, m, torch.optim.Adam(m.parameters()), {"step": 0, "config": cfg.to_dict()})
    assert export.main(["--a2l", str(run), "--generator", str(run), "--out", str(tmp_path / "b")]) == 2
    assert "not causal" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_train_export_dub(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        talking_clip(src / f"clip{i}.mp4", seconds=2.4, audio=speechlike(2.4, seed=i))
    shards = tmp_path / "shards"
    assert prepare.main([str(src), str(shards), "--workers", "1"]) == 0
    files = sorted(shards.glob("*.npz"))
    assert [f.name for f in files] == ["clip0.npz", "clip1.npz"]
    z = np.load(files[0])
    assert z["crops"].shape[1:] == (96, 96, 3) and z["valid"].all()
    assert z["wav"].size == pytest.approx(2.4 * 16000, rel=0.05)
    mtime = files[0].stat().st_mtime
    assert prepare.main([str(src), str(shards), "--workers", "1"]) == 0  # resumes: nothing redone
    assert files[0].stat().st_mtime == mtime

    a2l, gen, bundle = tmp_path / "a2l", tmp_path / "gen", tmp_path / "bundle"
    common = ["--data", str(shards), "--dev", str(shards), "--threads", "1"]
    assert train_a2l.main([*common, "--out", str(a2l), "--steps", "6", "--batch", "8", "--save-every", "3"]) == 0
    assert json.loads((a2l / "meta.json").read_text())["step"] == 6
    assert train_gen.main([*common, "--out", str(gen), "--steps", "2", "--batch", "2", "--base", "8"]) == 0
    # resuming continues from the checkpoint instead of starting over
    assert train_gen.main([*common, "--out", str(gen), "--steps", "3", "--batch", "2", "--base", "8"]) == 0
    assert json.loads((gen / "meta.json").read_text())["step"] == 3
    assert len(json.loads((gen / "units.json").read_text())["basis_components"]) == 8  # for train_a2l --basis

    from engines import export

    assert export.main(["--a2l", str(a2l), "--generator", str(gen), "--out", str(bundle)]) == 0
    b = load_bundle(bundle)
    assert b.crop_size == 96 and b.n_units == 9
    # an audio stage trained on another bundle's unit basis (--basis: the shipped one, not
    # what these shards fit) carries it, to pair with that bundle's generator
    from rtdub.model import DEFAULT_MODEL_DIR

    a2l_b = tmp_path / "a2l_b"
    args = [*common, "--out", str(a2l_b), "--steps", "2", "--batch", "8", "--basis", str(DEFAULT_MODEL_DIR)]
    assert train_a2l.main(args) == 0
    units = json.loads((a2l_b / "units.json").read_text())
    shipped = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())["units"]
    fitted = json.loads((a2l / "units.json").read_text())
    assert np.allclose(units["basis_components"], shipped["basis_components"])
    assert np.allclose(units["basis_mean"], shipped["basis_mean"])
    assert not np.allclose(fitted["basis_components"], shipped["basis_components"])
    out = tmp_path / "o.mp4"
    from .factories import write_wav

    wav = write_wav(tmp_path / "d.wav", speechlike(1.0, seed=5))
    engine = dataclasses.replace(EngineConfig.offline(), model=bundle)
    rep = dub_file(DubOptions(src / "clip0.mp4", wav, out, engine=engine, check_locality=True))
    assert out.exists() and rep.faces == rep.frames == 25
    assert rep.pixels_changed_outside_mask == 0
