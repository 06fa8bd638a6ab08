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

from engines.onnx_export import (  # the export functions, a library module (rtdub enroll uses them too)
    FIELDS_LAYOUT,
    NAMES,
    OPSET,
    NotCausal,
    compare_generators,
    export_onnx,
    load_a2l,
    load_gen,
    parity,
    parity_outputs,
)
from rtdub.model import FORMAT, geometry
from training.models import LipToFace


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
