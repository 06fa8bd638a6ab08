"""Per-frame cost of the two model stages in onnxruntime (the ≤ 8 ms budget of issue 2).

    python -m benchmarks.model_speed [--model engines/default] [--threads 2] [--runs 500] [--json OUT]

One frame = one audio-to-lip call (batch 1) + one generator call (batch 1), as the pipeline
makes them. Prints p50/p95/p99 in ms for each stage and for their sum, after warm-up.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_json
from rtdub.backends import BackendConfig, get_backend
from rtdub.model import load_bundle


def measure(model: Path | None, threads: int, runs: int, warmup: int = 30) -> dict[str, object]:
    bundle = load_bundle(model)
    be = get_backend("onnx", bundle, BackendConfig(threads=threads))
    rng = np.random.default_rng(0)
    s = bundle.crop_size
    mel = (rng.random((1, bundle.mel_window, 80), np.float32) * 8 - 4).astype(np.float32)
    la = np.full((1, 1), 0.1, np.float32)
    pose = rng.random((1, 3, s, s), np.float32)
    ref = rng.random((1, 3, s, s), np.float32)
    units = rng.standard_normal((1, bundle.context, bundle.n_units)).astype(np.float32)
    a2l, gen = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        be.audio_to_lip(mel, la)
        t1 = time.perf_counter()
        be.generate(pose, ref, units)
        t2 = time.perf_counter()
        if i >= warmup:
            a2l.append((t1 - t0) * 1000)
            gen.append((t2 - t1) * 1000)
    total = np.asarray(a2l) + np.asarray(gen)

    def pct(x: list[float] | np.ndarray) -> dict[str, float]:
        return {f"p{q}": float(np.percentile(x, q)) for q in (50, 95, 99)}

    return {
        "model": str(bundle.root),
        "crop_size": s,
        "threads": threads,
        "runs": runs,
        "cpu": platform.processor() or platform.machine(),
        "a2l_ms": pct(a2l),
        "generator_ms": pct(gen),
        "total_ms": pct(total),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    r = measure(args.model, args.threads, args.runs)
    for k in ("a2l_ms", "generator_ms", "total_ms"):
        v = r[k]
        assert isinstance(v, dict)
        print(f"{k:13s} p50 {v['p50']:6.2f}  p95 {v['p95']:6.2f}  p99 {v['p99']:6.2f}")
    write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
