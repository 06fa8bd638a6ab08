"""CPU cost of the fp32 vs the int8 generator in onnxruntime (issue 5).

    python -m benchmarks.int8_cpu --fp32 engines/default --int8 runs/default_int8
        [--threads 2] [--runs 200] [--batch 1 5] [--json OUT]

Both bundles' generator.onnx run in the CPU backend's session setup (``make_session``: intra-op
threads, no spinning) on the same random inputs, alternating fp32 and int8 in blocks so that a
background load hits both alike. Prints one line per model and batch:

    model  batch  p50_ms  p95_ms  per_frame_ms  speedup

where ``per_frame_ms`` is p50 / batch and ``speedup`` is fp32 p50 / int8 p50 at that batch.
``--json`` writes ``{"threads", "runs", "cpu", "results": [{"model", "batch", "p50_ms",
"p95_ms", "per_frame_ms"}...], "speedup": {"1": x, "5": y}}``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_json
from rtdub.backends.onnx import make_session
from rtdub.model import load_bundle


def _feeds(batch: int, size: int, context: int, units: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pose": rng.random((batch, 3, size, size), np.float32),
        "reference": rng.random((batch, 3, size, size), np.float32),
        "units": rng.standard_normal((batch, context, units)).astype(np.float32),
    }


def measure(fp32: Path, int8: Path, threads: int, runs: int, batches: list[int], warmup: int = 20) -> dict[str, Any]:
    b32, b8 = load_bundle(fp32), load_bundle(int8)
    sessions = {
        "fp32": make_session(str(b32.generator_path), threads),
        "int8": make_session(str(b8.generator_path), threads),
    }
    results: list[dict[str, Any]] = []
    speedup: dict[str, float] = {}
    block = 10
    for batch in batches:
        feeds = _feeds(batch, b32.crop_size, b32.context, b32.n_units)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():
            for _ in range(warmup):
                s.run(["face"], feeds)  # type: ignore[attr-defined]
        while len(times["fp32"]) < runs:
            for name, s in sessions.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    s.run(["face"], feeds)  # type: ignore[attr-defined]
                    times[name].append((time.perf_counter() - t0) * 1000)
        for name, t in times.items():
            a = np.asarray(t[:runs])
            p50 = float(np.median(a))
            results.append(
                {
                    "model": name,
                    "batch": batch,
                    "p50_ms": p50,
                    "p95_ms": float(np.percentile(a, 95)),
                    "per_frame_ms": p50 / batch,
                }
            )
        p = {r["model"]: r["p50_ms"] for r in results if r["batch"] == batch}
        speedup[str(batch)] = p["fp32"] / p["int8"]
    return {
        "threads": threads,
        "runs": runs,
        "cpu": platform.processor() or platform.machine(),
        "fp32": str(fp32),
        "int8": str(int8),
        "results": results,
        "speedup": speedup,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fp32 vs int8 generator speed in onnxruntime")
    p.add_argument("--fp32", type=Path, default=Path("engines/default"))
    p.add_argument("--int8", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 5])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    r = measure(args.fp32, args.int8, args.threads, args.runs, args.batch)
    print(f"{'model':6s} {'batch':>5s} {'p50_ms':>8s} {'p95_ms':>8s} {'per_frame_ms':>12s} {'speedup':>8s}")
    for row in r["results"]:
        sp = r["speedup"][str(row["batch"])] if row["model"] == "int8" else 1.0
        print(
            f"{row['model']:6s} {row['batch']:5d} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} "
            f"{row['per_frame_ms']:12.2f} {sp:8.2f}"
        )
    write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
