"""Static int8 quantization of the generator for the CPU backend (onnxruntime QDQ, per-channel).

    python -m engines.quantize --model engines/default --shards data2/train --out runs/default_int8
        [--samples 256] [--method minmax|percentile|entropy] [--ops Conv Gemm] [--eval data2/clips]

Calibrates on real aligned crops from prepared shards (engines/calibration.py builds the same
inputs the pipeline feeds the generator), quantizes weights to int8 per output channel and
activations to uint8 (QDQ: QuantizeLinear/DequantizeLinear pairs around the quantized ops, which
onnxruntime fuses into integer kernels), and writes a complete bundle: manifest.json (with a
``quantization`` record), a2l.onnx (copied, it is tiny) and the quantized generator.onnx.

The encoder, the units MLP and the decoder are quantized (Conv, Gemm and the element-wise ops
between them, so activations stay int8 from one conv to the next); the head conv and what
follows it (flow field, grid sampling of the reference, the final mix) stay float, since an
8-bit flow would move the sampled texture by about half a pixel. With ``--eval SHARDS`` the fp32 and int8 generators
are compared on held-out frames: parity (max / mean abs difference) and the lower-face PSNR and
SSIM of both against the ground-truth crop (docs/design.md §5).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtdub.measure.metrics import psnr, ssim
from rtdub.model import ModelBundle, load_bundle
from rtdub.render.blend import face_mask

from .calibration import GeneratorSample, generator_samples, list_shards

logger = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy")
# quantizing the element-wise ops between the convolutions too (FiLM's Mul/Add, ReLU, the
# decoder's Resize and Concat) keeps activations in int8 from one conv to the next: measured here
# 2.4 ms vs 4.4 ms per frame for Conv/Gemm alone, at a smaller error (see --eval)
DEFAULT_OPS = ("Conv", "Gemm", "Relu", "Add", "Mul", "Concat", "Resize")


@dataclass(frozen=True)
class QuantConfig:
    method: str = "minmax"
    ops: tuple[str, ...] = DEFAULT_OPS
    per_channel: bool = True
    samples: int = 256
    seed: int = 0
    # onnxruntime's quant_pre_process (shape inference + graph optimization): it fuses Conv+Relu
    # before quantization, which leaves slower kernels (measured 2.9 vs 2.4 ms), so off by default
    preprocess: bool = False
    keep_tail_float: bool = True  # the last conv (flow, mix weight, colour) and everything after it
    exclude: tuple[str, ...] = field(default_factory=tuple)  # more node names kept in float


def _import_quant() -> Any:
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization
    except ImportError as exc:
        raise SystemExit(f"quantize: error: {exc.name} is missing: pip install onnx onnxruntime") from exc
    return quantization


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SampleReader:
    """An onnxruntime ``CalibrationDataReader`` over prepared generator samples (batch 1 each)."""

    def __init__(self, samples: list[GeneratorSample]) -> None:
        self._samples = samples
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._samples):
            return None
        s = self._samples[self._i]
        self._i += 1
        return s.feeds()

    def rewind(self) -> None:
        self._i = 0

    def __len__(self) -> int:
        return len(self._samples)


def tail_nodes(path: Path) -> list[str]:
    """Names of the model's last Conv and of every node downstream of it (topological order)."""
    import onnx

    nodes = list(onnx.load(str(path)).graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    produced = set(nodes[convs[-1]].output)
    out = [nodes[convs[-1]].name]
    for n in nodes[convs[-1] + 1 :]:
        if any(i in produced for i in n.input):
            out.append(n.name)
            produced.update(n.output)
    return out


def quantize_generator(src: Path, dst: Path, samples: list[GeneratorSample], cfg: QuantConfig) -> dict[str, Any]:
    """Quantize ``src`` into ``dst`` calibrated on ``samples``; returns what to record."""
    q = _import_quant()
    import onnx

    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "percentile": q.CalibrationMethod.Percentile,
        "entropy": q.CalibrationMethod.Entropy,
    }
    if cfg.method not in methods:
        raise ValueError(f"unknown calibration method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    exclude = list(cfg.exclude) + (tail_nodes(src) if cfg.keep_tail_float else [])
    reader = SampleReader(samples)  # a CalibrationDataReader by its get_next (the ABC has a subclass hook)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rtdub-quant-") as tmpd:
        model_in = Path(tmpd) / "pre.onnx"
        if cfg.preprocess:
            # onnx shape inference + onnxruntime's graph optimizations; the symbolic shape
            # inference does not cover GridSample, and every shape but the batch is static anyway
            q.quant_pre_process(str(src), str(model_in), skip_symbolic_shape=True)
        else:
            shutil.copyfile(src, model_in)
        tmp_out = dst.with_name(dst.name + ".part")
        q.quantize_static(
            str(model_in),
            str(tmp_out),
            reader,
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(cfg.ops),
            per_channel=cfg.per_channel,
            reduce_range=False,  # VNNI/AMX CPUs do not saturate u8*s8; older AVX2 ones may want True
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=methods[cfg.method],
            extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False},
        )
        onnx.checker.check_model(onnx.load(str(tmp_out)), full_check=True)
        os.replace(tmp_out, dst)
    counts = qdq_counts(dst)
    return {
        "format": "QDQ",
        "weights": "int8 per-channel" if cfg.per_channel else "int8 per-tensor",
        "activations": "uint8 asymmetric",
        "method": cfg.method,
        "ops": list(cfg.ops),
        "float_nodes": exclude,
        "preprocessed": cfg.preprocess,
        "calibration_samples": len(samples),
        "seed": cfg.seed,
        "qdq_nodes": counts,
        "source_sha256": sha256(src),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def qdq_counts(path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path))
    ops = [n.op_type for n in m.graph.node]
    return {k: ops.count(k) for k in ("QuantizeLinear", "DequantizeLinear")}


def _session(path: Path, threads: int = 1) -> Any:
    from rtdub.backends.onnx import make_session

    return make_session(str(path), threads)


def evaluate(fp32: Path, int8: Path, samples: list[GeneratorSample], threads: int = 1) -> dict[str, float]:
    """Parity of int8 vs fp32 and lower-face PSNR / SSIM of both vs the ground-truth crops."""
    a, b = _session(fp32, threads), _session(int8, threads)
    s = samples[0].pose.shape[-1]
    region = face_mask(s).soft > 0  # the pixels the paste-back uses
    diffs, means = [], []
    keys = ("psnr_fp32", "psnr_int8", "ssim_fp32", "ssim_int8", "psnr_int8_vs_fp32")
    scores: dict[str, list[float]] = {k: [] for k in keys}
    for smp in samples:
        ya = a.run(["face"], smp.feeds())[0]
        yb = b.run(["face"], smp.feeds())[0]
        d = np.abs(ya - yb)
        diffs.append(float(d.max()))
        means.append(float(d.mean()))
        for k in range(len(ya)):
            fa = np.rint(np.clip(ya[k].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
            fb = np.rint(np.clip(yb[k].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
            gt = smp.target[k]
            scores["psnr_fp32"].append(psnr(fa, gt, region))
            scores["psnr_int8"].append(psnr(fb, gt, region))
            scores["ssim_fp32"].append(ssim(fa, gt, region))
            scores["ssim_int8"].append(ssim(fb, gt, region))
            scores["psnr_int8_vs_fp32"].append(psnr(fb, fa, region))
    out = {"frames": float(sum(len(x.pose) for x in samples)), "max_abs": max(diffs), "mean_abs": float(np.mean(means))}
    for name, v in scores.items():
        finite = [x for x in v if np.isfinite(x)]
        out[name] = float(np.mean(finite)) if finite else float("inf")
    return out


def write_bundle(bundle: ModelBundle, out: Path, generator: Path, record: dict[str, Any]) -> None:
    """A complete bundle in ``out``: manifest (+ quantization record), a2l copy, int8 generator.

    Built in a sibling temporary directory and renamed into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".part", dir=out.parent))
    try:
        manifest = json.loads((bundle.root / "manifest.json").read_text())
        a2l_name = manifest["a2l"]["file"]
        gen_name = manifest["generator"]["file"]
        shutil.copyfile(bundle.a2l_path, tmp / a2l_name)
        if bundle.a2l_baseline_path is not None:  # a fused audio drive keeps its base model
            shutil.copyfile(bundle.a2l_baseline_path, tmp / manifest["a2l"]["baseline"])
        shutil.copyfile(generator, tmp / gen_name)
        if bundle.phonetic_path is not None:  # the phonetic drive's model goes with the units
            shutil.copyfile(bundle.phonetic_path, tmp / manifest["phonetic"]["file"])
        manifest["name"] = f"{manifest.get('name', 'rtdub')}-int8"
        manifest["quantization"] = {"generator": record}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        old = None
        if out.exists():
            old = out.with_name(out.name + f".old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="int8 (QDQ, per-channel) generator for the CPU backend")
    p.add_argument("--model", type=Path, default=Path("engines/default"), help="fp32 bundle")
    p.add_argument("--shards", type=Path, required=True, help="prepared shards (dir or .npz) for calibration")
    p.add_argument("--out", type=Path, required=True, help="output bundle directory")
    p.add_argument("--samples", type=int, default=QuantConfig.samples, help="calibration frames")
    p.add_argument("--method", choices=METHODS, default=QuantConfig.method)
    p.add_argument("--ops", nargs="+", default=list(DEFAULT_OPS), help="op types to quantize")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    p.add_argument("--preprocess", action="store_true", help="run onnxruntime's quant_pre_process first")
    p.add_argument("--quantize-tail", action="store_true", help="quantize the last conv and the mixing too")
    p.add_argument("--eval", type=Path, default=None, help="held-out shards: report int8 vs fp32 quality")
    p.add_argument("--eval-samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for h in logging.getLogger().handlers:  # onnxruntime's advice to pre-process: measured, declined
        h.addFilter(lambda r: "pre-process" not in r.getMessage())
    try:
        bundle = load_bundle(args.model)
        shards = list_shards(args.shards)
        cfg = QuantConfig(
            method=args.method,
            ops=tuple(args.ops),
            per_channel=not args.per_tensor,
            samples=args.samples,
            seed=args.seed,
            preprocess=args.preprocess,
            keep_tail_float=not args.quantize_tail,
        )
        calib = generator_samples(shards, bundle, cfg.samples, batch=1, seed=cfg.seed)
    except (OSError, ValueError) as exc:
        print(f"quantize: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rtdub-int8-") as tmpd:
        qpath = Path(tmpd) / "generator.onnx"
        record = quantize_generator(bundle.generator_path, qpath, calib, cfg)
        record["calibration_shards"] = len(shards)
        record["config"] = asdict(cfg)
        if args.eval is not None:
            held = generator_samples(list_shards(args.eval), bundle, args.eval_samples, batch=1, seed=cfg.seed + 1)
            record["eval"] = evaluate(bundle.generator_path, qpath, held)
        write_bundle(bundle, args.out, qpath, record)
    print(f"quantize: wrote {args.out} ({record['qdq_nodes']['QuantizeLinear']} QuantizeLinear, "
          f"{record['qdq_nodes']['DequantizeLinear']} DequantizeLinear; {record['seconds']} s)")  # fmt: skip
    if "eval" in record:
        e = record["eval"]
        print(
            f"int8 vs fp32 on {int(e['frames'])} held-out frames: "
            f"max abs {e['max_abs']:.4f}, mean abs {e['mean_abs']:.4f}, "
            f"PSNR int8 vs fp32 {e['psnr_int8_vs_fp32']:.2f} dB\n"
            f"lower-face PSNR vs ground truth: fp32 {e['psnr_fp32']:.2f} dB, int8 {e['psnr_int8']:.2f} dB; "
            f"SSIM: fp32 {e['ssim_fp32']:.4f}, int8 {e['ssim_int8']:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
