"""Enrolment (issue 19): the generic generator's torch weights recovered from its ONNX export,
and ``rtdub enroll`` on generated media."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import Generator, Tensor  # noqa: E402

from engines.onnx_export import export_onnx  # noqa: E402
from engines.onnx_weights import (  # noqa: E402
    RecoveryError,
    generator_from_bundle,
    load_onnx_weights,
    parity,
)
from rtdub.model import DEFAULT_MODEL_DIR  # noqa: E402
from training.models import GenConfig, LipToFace  # noqa: E402

PARITY_TOL = 1e-4


def _randomised(cfg: GenConfig, seed: int) -> LipToFace:
    """A generator whose every weight and BatchNorm statistic is random (running means and
    variances far from 0 and 1, so a fold that ignored them would show)."""
    torch.manual_seed(seed)
    m = LipToFace(cfg)
    for p in m.parameters():
        p.data.normal_(0, 0.05)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.3, 3.0)
            mod.weight.data.uniform_(0.5, 1.5)
    return m.eval()


def _inputs(n: int, g: Generator) -> tuple[Tensor, Tensor, Tensor]:
    pose, ref = torch.rand(n, 3, 96, 96, generator=g), torch.rand(n, 3, 96, 96, generator=g)
    return pose, ref, torch.randn(n, 5, 9, generator=g)


def test_the_shipped_generator_comes_back_in_torch() -> None:
    model, rec = generator_from_bundle(DEFAULT_MODEL_DIR)
    assert len(rec.folded) == 14 and rec.named  # 7 blocks x 2 conv+bn; the linears and the head by name
    err = parity(model, DEFAULT_MODEL_DIR / "generator.onnx", batch=3, seed=1)
    assert max(err.values()) < PARITY_TOL, err


@pytest.mark.parametrize("full_colour", [False, True])
def test_recovered_weights_compute_the_exported_function(tmp_path: Path, full_colour: bool) -> None:
    """Export a random generator (its BatchNorms folded into the convs), recover it into a
    fresh module, and compare both with the original torch module and with onnxruntime."""
    cfg = GenConfig(base=8, full_colour=full_colour)
    original = _randomised(cfg, seed=3)
    f = tmp_path / "g.onnx"
    export_onnx(original, f, None)
    back = LipToFace(cfg)
    rec = load_onnx_weights(back, f)
    back.eval()
    assert len(rec.folded) == 14
    assert max(parity(back, f, batch=2).values()) < PARITY_TOL
    g = torch.Generator().manual_seed(7)
    x = _inputs(2, g)
    with torch.no_grad():
        diff = (original(*x) - back(*x)).abs().max().item()
    assert diff < PARITY_TOL


def test_a_graph_of_another_model_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "g.onnx"
    export_onnx(_randomised(GenConfig(base=8), seed=0), f, None)
    with pytest.raises(RecoveryError, match="shape"):
        load_onnx_weights(LipToFace(GenConfig(base=12)), f)
    with pytest.raises(RecoveryError):  # the full-colour head's tensors are not in the graph
        load_onnx_weights(LipToFace(GenConfig(base=8, full_colour=True)), f)


def test_frozen_batchnorm_keeps_the_function_in_training_mode() -> None:
    """A fine-tune trains with the BatchNorms in eval mode: the recovered statistics (identity)
    are not the original's, so batch statistics would change the function."""
    from engines.onnx_weights import freeze_batchnorm

    model, _ = generator_from_bundle(DEFAULT_MODEL_DIR)
    g = torch.Generator().manual_seed(0)
    x = _inputs(4, g)
    with torch.no_grad():
        ref = model(*x)
        drifting = copy.deepcopy(model).train()  # batch statistics (and running ones updated)
        drifted = drifting(*x)
        model.train()
        assert freeze_batchnorm(model) == 14
        frozen = model(*x)
    assert (drifted - ref).abs().max().item() > 1e-2
    assert np.allclose(frozen.numpy(), ref.numpy(), atol=1e-6)
