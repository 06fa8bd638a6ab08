"""Export trained checkpoints to an ONNX model bundle (torch -> ONNX, opset 17).

    python -m engines.export --a2l runs/a2l --generator runs/gen --out engines/default
        [--fixed-batch 1 5]

Writes a2l.onnx and generator.onnx with a dynamic batch axis (plus, with --fixed-batch,
generator_b{N}.onnx with the batch fixed, for TensorRT profiles), runs the ONNX checker,
compares every export with torch on random inputs, and writes manifest.json. Files are
written under temporary names and renamed, so a failed export leaves the old bundle intact.

The generator has two outputs: ``face`` (B, 3, S, S), and ``fields`` (B, 6, S, S): the flow,
mixing weight and synthesised colour that make the face (``LipToFace.fields``). The runtime
applies the fields to a higher-resolution crop of the reference (rtdub/render/hires.py); bundles
exported before, with ``face`` alone, still load and render at S.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

from rtdub.model import FIELD_CHANNELS, FORMAT, geometry
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="export checkpoints to an ONNX model bundle")
    p.add_argument("--a2l", type=Path, required=True)
    p.add_argument("--generator", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("engines/default"))
    p.add_argument("--fixed-batch", type=int, nargs="*", default=[])
    p.add_argument("--name", default="rtdub-default")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        a2l = load_a2l(args.a2l)
    except NotCausal as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    gen = load_gen(args.generator)
    units = json.loads((args.a2l / "units.json").read_text())
    if gen.cfg.units != a2l.cfg.units:
        print("export: error: the two stages disagree on the number of units", file=sys.stderr)
        return 2
    report = {}
    prev = args.out / "generator.onnx"
    previous = prev.read_bytes() if prev.is_file() else None
    export_onnx(a2l, args.out / "a2l.onnx", None)
    export_onnx(gen, args.out / "generator.onnx", None)
    report["a2l"] = parity(a2l, args.out / "a2l.onnx", 4)
    gp = parity_outputs(gen, args.out / "generator.onnx", 5)
    report["generator"], report["generator_fields"] = gp["face"], gp["fields"]
    for b in args.fixed_batch:
        f = args.out / f"generator_b{b}.onnx"
        export_onnx(gen, f, b)
        report[f"generator_b{b}"] = parity(gen, f, b)
    manifest = {
        "format": FORMAT,
        "name": args.name,
        "crop_size": gen.cfg.size,
        "a2l": {
            "file": "a2l.onnx",
            "window": a2l.cfg.window,
            "max_lookahead": a2l.cfg.max_lookahead,
            "config": a2l.cfg.to_dict(),
        },
        "generator": {
            "file": "generator.onnx",
            "context": gen.cfg.context,
            "config": gen.cfg.to_dict(),
            "outputs": NAMES[LipToFace][1],
            "fields": FIELDS_LAYOUT,
        },
        "units": {
            "basis_mean": units["basis_mean"],
            "basis_components": units["basis_components"],
            "closed": units["closed_units"],
            "smoothing": units["smoothing"],
        },
        "geometry": geometry(),
        "opset": OPSET,
        "parity_max_abs": report,
        **({"previous_generator": compare_generators(gen, previous, prev)} if previous is not None else {}),
        "training": {
            "a2l": json.loads((args.a2l / "meta.json").read_text()).get("dev"),
            "generator": json.loads((args.generator / "meta.json").read_text()).get("dev"),
        },
    }
    tmp = args.out / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, args.out / "manifest.json")
    for k, v in report.items():
        print(f"{k}: torch vs onnxruntime max abs error {v:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
