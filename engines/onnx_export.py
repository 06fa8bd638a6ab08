"""Exporting the trainable stages to ONNX (a library module: engines/export.py's command
line and rtdub enroll's bundle writer both use it).

``export_onnx`` writes a model with a dynamic (or fixed) batch axis under a temporary name,
runs the ONNX checker and renames it; ``parity_outputs`` compares torch with onnxruntime on
random inputs. The generator is exported with two outputs, ``face`` (B, 3, S, S) and
``fields`` (B, 6, S, S): the flow, mixing weight and synthesised colour that make the face
(``LipToFace.fields``), which the runtime applies to a higher-resolution crop of the reference
(rtdub/render/hires.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import torch

from rtdub.model import FIELD_CHANNELS
from training.common import load_checkpoint
from training.models import (
    A2LConfig,
    AudioToLip,
    ContextA2L,
    GenConfig,
    GeneratorWithFields,
    LipToFace,
    build_a2l,
)

OPSET = 17
# the generator's second output, channel by channel (rtdub/render/hires.py reads it)
FIELDS_LAYOUT = {
    "channels": list(FIELD_CHANNELS),
    "flow": "grid units of grid_sample(align_corners=True): 2 = the crop's width",
    "face": "alpha * warp(reference, flow) + (1 - alpha) * colour",
}


class NotCausal(ValueError):
    """An audio stage that needs audio after the frame beyond the lookahead (a teacher)."""


def load_a2l(run: Path) -> AudioToLip | ContextA2L:
    """The run's audio stage, conv or CALS; a teacher (fixed future audio) is refused: the
    runtime's window ends ``lookahead`` after the frame, which a teacher would ignore."""
    meta = json.loads((run / "meta.json").read_text())
    cfg = A2LConfig(**meta["config"])
    if cfg.future > 0:
        raise NotCausal(f"{run}: a teacher ({cfg.future:g} s of future audio) is not causal; export a student")
    m = build_a2l(cfg)
    load_checkpoint(run, m)
    assert isinstance(m, AudioToLip | ContextA2L)
    return m.eval()


def load_gen(run: Path) -> LipToFace:
    meta = json.loads((run / "meta.json").read_text())
    m = LipToFace(GenConfig(**meta["config"]))
    load_checkpoint(run, m)
    return m.eval()


def example_inputs(model: torch.nn.Module, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, AudioToLip | ContextA2L):
        c = model.cfg
        return (
            torch.rand(batch, c.window, c.n_mels, generator=g) * 8 - 4,
            torch.rand(batch, 1, generator=g) * c.max_lookahead,
        )
    assert isinstance(model, LipToFace)
    gc = model.cfg
    s = gc.size
    return (
        torch.rand(batch, 3, s, s, generator=g),
        torch.rand(batch, 3, s, s, generator=g),
        torch.randn(batch, gc.context, gc.units, generator=g),
    )


NAMES = {
    AudioToLip: (["mel", "lookahead"], ["units"]),
    ContextA2L: (["mel", "lookahead"], ["units"]),
    LipToFace: (["pose", "reference", "units"], ["face", "fields"]),
}


def _exported(model: torch.nn.Module) -> torch.nn.Module:
    if not isinstance(model, LipToFace):
        return model
    # in the wrapped model's mode: torch.onnx.export restores the wrapper's mode afterwards,
    # and a wrapper left in training mode would put the generator's batch norms in it too
    return GeneratorWithFields(model).train(model.training)


def _outputs(model: torch.nn.Module, x: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        y = _exported(model)(*x)
    return [t.numpy() for t in (y if isinstance(y, tuple) else (y,))]


def export_onnx(model: torch.nn.Module, path: Path, batch: int | None) -> None:
    """Export with a dynamic batch axis (batch None) or a fixed one; atomic; checker-verified.

    A generator is exported with both outputs, ``face`` then ``fields``."""
    ins, outs = NAMES[type(model)]
    dyn = None if batch is not None else {n: {0: "batch"} for n in ins + outs}
    tmp = path.with_name(path.name + ".part")
    with torch.no_grad():
        torch.onnx.export(
            _exported(model),
            example_inputs(model, batch or 2),
            str(tmp),
            input_names=ins,
            output_names=outs,
            dynamic_axes=dyn,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    os.replace(tmp, path)


def parity_outputs(model: torch.nn.Module, path: Path, batch: int) -> dict[str, float]:
    """Max abs difference between torch and onnxruntime on random inputs, per output."""
    import onnxruntime as ort

    ins, outs = NAMES[type(model)]
    x = example_inputs(model, batch, seed=1)
    ref = _outputs(model, x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(outs, {n: t.numpy() for n, t in zip(ins, x, strict=True)})
    return {n: float(np.max(np.abs(r - g))) for n, r, g in zip(outs, ref, got, strict=True)}


def parity(model: torch.nn.Module, path: Path, batch: int) -> float:
    """Max abs difference of the first output (units, or the face) on random inputs."""
    return next(iter(parity_outputs(model, path, batch).values()))


def _initializer_hashes(model: onnx.ModelProto) -> set[str]:
    import hashlib

    from onnx import numpy_helper

    return {
        hashlib.sha256(np.ascontiguousarray(numpy_helper.to_array(t)).tobytes()).hexdigest()
        for t in model.graph.initializer
    }


def compare_generators(gen: LipToFace, previous: bytes, path: Path, batch: int = 5) -> dict[str, object]:
    """How a re-export relates to the generator it replaces: whether every weight tensor of the
    previous file is in the new one unchanged, and the max abs difference of their faces on
    random inputs."""
    import onnxruntime as ort

    old_model, new_model = onnx.load_from_string(previous), onnx.load(str(path))
    x = example_inputs(gen, batch, seed=2)
    feeds = {n: t.numpy() for n, t in zip(NAMES[LipToFace][0], x, strict=True)}
    so = ort.SessionOptions()
    faces = [
        ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(["face"], feeds)[0]
        for m in (old_model, new_model)
    ]
    return {
        "weights_identical": _initializer_hashes(old_model) <= _initializer_hashes(new_model),
        "face_max_abs_vs_previous": float(np.max(np.abs(faces[0] - faces[1]))),
    }
