"""GPU timings: the generator and audio-to-lip TensorRT engines, and the CUDA paste-back kernel.

    python -m benchmarks.gpu [--model engines/default] [--precision fp16 int8] [--batches 1 5]
        [--runs 500] [--frame 1280x720] [--cache-dir DIR] [--json benchmarks/results/gpu.json]

``--kernel-only`` times the blending kernel alone (pycuda, no TensorRT needed).
Engines come from the engine cache (``python -m engines.build_trt``); a missing FP16/FP32 engine
is built on the spot, a missing INT8 engine is skipped with a note (it needs calibration crops).
Without TensorRT, pycuda or a GPU it prints one line, ``benchmarks.gpu: error: ...``, and exits 2.

Output: a header line, then one row per measurement, medians and 95th percentiles in ms:

    GPU NVIDIA <name> (sm 8.6), TensorRT 10.x.y, 500 runs
    what        config                             p50_ms   p95_ms  per_frame_ms
    engine      generator fp16 b1 gpu               x.xxx    x.xxx         x.xxx
    engine      generator fp16 b1 e2e               x.xxx    x.xxx         x.xxx
    engine      generator fp16 b5 gpu               x.xxx    x.xxx         x.xxx
    engine      generator fp16 b5 e2e               x.xxx    x.xxx         x.xxx
    engine      generator int8 b1 gpu               x.xxx    x.xxx         x.xxx
    ...         (int8 b1 e2e, b5 gpu, b5 e2e; the a2l engine at b1 and b5)
    kernel      rgb 1280x720 box WxH gpu            x.xxx    x.xxx         x.xxx
    kernel      rgb 1280x720 box WxH host           x.xxx    x.xxx         x.xxx
    kernel      nv12 1280x720 box WxH gpu           x.xxx    x.xxx         x.xxx
    kernel max abs diff vs blend.paste: 0

``gpu`` rows time the device work alone with CUDA events (``execute_async_v3``, or the kernel
launch on a frame and a crop already on the device); ``e2e``/``host`` rows time the host call
with its copies (pinned host -> device -> host for engines; the face box of a host frame for
the kernel). ``per_frame_ms`` is p50 divided by the batch. The last line checks the kernel
against the numpy/OpenCV paste (expected 0; the tests accept 1).

``--json`` writes::

    {"gpu": {"name", "compute_capability"}, "tensorrt": "10.9.0", "runs": 500,
     "results": [{"kind": "engine", "model": "generator", "precision": "fp16", "batch": 1,
                  "timing": "gpu" | "e2e", "p50_ms", "p95_ms", "per_frame_ms"},
                 {"kind": "kernel", "format": "rgb" | "nv12", "frame": [w, h], "box": [w, h],
                  "timing": "gpu" | "host", "p50_ms", "p95_ms", "per_frame_ms"}, ...],
     "skipped": ["generator int8: no cached engine ..."], "kernel_max_abs_vs_paste": 0}
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_json
from rtdub.backends.tensorrt import DeviceContext, EngineSpec, TrtModel, cached_engine, import_pycuda, import_tensorrt
from rtdub.exceptions import BackendUnavailable, ModelError
from rtdub.face.align import Alignment, warp_to_crop
from rtdub.model import ModelBundle, load_bundle
from rtdub.render.blend import face_mask, match_colour, paste


def _stats(ms: list[float], batch: int = 1) -> dict[str, float]:
    a = np.asarray(ms)
    p50 = float(np.median(a))
    return {"p50_ms": p50, "p95_ms": float(np.percentile(a, 95)), "per_frame_ms": p50 / batch}


def _time_gpu(cuda: Any, stream: Any, fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    start, end = cuda.Event(), cuda.Event()
    out = []
    for i in range(warmup + runs):
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        if i >= warmup:
            out.append(end.time_since(start))
    return out


def _time_host(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _feeds(model: TrtModel, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {n: rng.random((batch, *model.host[n].shape[1:])).astype(model.host[n].dtype) for n in model.inputs}


def bench_engine(cuda: Any, stream: Any, model: TrtModel, batch: int, runs: int, warmup: int) -> dict[str, list[float]]:
    feeds = _feeds(model, batch, np.random.default_rng(0))
    model.run(feeds)  # sets shapes and addresses on the profile's context
    ctx = model.contexts[model.profile_for(batch)]
    gpu = _time_gpu(cuda, stream, lambda: ctx.execute_async_v3(stream.handle), runs, warmup)
    e2e = _time_host(lambda: model.run(feeds), runs, warmup)
    return {"gpu": gpu, "e2e": e2e}


def face_alignment(width: int, height: int, size: int) -> Alignment:
    """A face centred in the frame, its crop spanning 40 % of the frame height, tilted 5°."""
    k = size / (0.4 * height)
    c, s = k * np.cos(0.087), k * np.sin(0.087)
    r = np.array([[c, -s], [s, c]])
    t = np.array([size / 2, size / 2]) - r @ np.array([width / 2, height / 2])
    return Alignment(np.hstack([r, t[:, None]]), size)


def bench_kernel(
    cuda: Any, width: int, height: int, size: int, runs: int, warmup: int
) -> tuple[list[dict[str, Any]], int]:
    from rtdub.render.cuda import LAYOUT_HWC_F32, CudaBlender, colour_offset, plan_paste

    mask = face_mask(size)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    face = (rng.random((size, size, 3)) * 255).astype(np.float32)
    al = face_alignment(width, height, size)
    offset = colour_offset(face, warp_to_crop(frame, al).astype(np.float32), mask)
    blender = CudaBlender(mask)
    rows: list[dict[str, Any]] = []
    try:
        # parity with the numpy/OpenCV paste on this frame
        ref, got = frame.copy(), frame.copy()
        paste(ref, match_colour(face, warp_to_crop(frame, al).astype(np.float32), mask), al, mask)
        blender.paste_rgb(got, face, al, offset)
        max_diff = int(np.abs(ref.astype(np.int16) - got).max())

        plan = plan_paste(width, height, al, mask, chroma=True)
        assert plan is not None and plan.chroma is not None
        b, cb = plan.luma, plan.chroma
        frame_dev = cuda.to_device(frame)
        crop_dev = cuda.to_device(face)
        pitch = width * 3
        box_ptr = int(frame_dev) + b.y0 * pitch + b.x0 * 3
        stream = blender.stream

        def rgb() -> None:
            blender.launch_rgb(box_ptr, pitch, 3, b, int(crop_dev), LAYOUT_HWC_F32, offset, stream)

        y_dev = cuda.mem_alloc(width * height)
        cpitch = ((width + 1) // 2) * 2  # NV12: interleaved U, V at half resolution
        uv_dev = cuda.mem_alloc(((height + 1) // 2) * cpitch)
        y_ptr = int(y_dev) + b.y0 * width + b.x0
        u_ptr = int(uv_dev) + cb.y0 * cpitch + cb.x0 * 2

        def nv12() -> None:
            blender.launch_luma(y_ptr, width, b, int(crop_dev), LAYOUT_HWC_F32, offset, stream)
            blender.launch_chroma(u_ptr, u_ptr + 1, cpitch, 2, cb, int(crop_dev), LAYOUT_HWC_F32, offset, stream)

        base = {"kind": "kernel", "frame": [width, height], "box": [b.width, b.height]}
        with blender.active():
            rows.append(
                {**base, "format": "rgb", "timing": "gpu", **_stats(_time_gpu(cuda, stream, rgb, runs, warmup))}
            )
        work = frame.copy()
        host = _time_host(lambda: blender.paste_rgb(work, face, al, offset), runs, warmup)
        rows.append({**base, "format": "rgb", "timing": "host", **_stats(host)})
        with blender.active():
            rows.append(
                {**base, "format": "nv12", "timing": "gpu", **_stats(_time_gpu(cuda, stream, nv12, runs, warmup))}
            )
        for buf in (frame_dev, crop_dev, y_dev, uv_dev):
            buf.free()
    finally:
        blender.close()
    return rows, max_diff


def run(args: argparse.Namespace) -> dict[str, Any]:
    trt = None if args.kernel_only else import_tensorrt()
    cuda = import_pycuda()
    bundle: ModelBundle = load_bundle(args.model)
    dev = DeviceContext(cuda, args.device)
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    batches = tuple(args.batches)
    try:
        with dev:
            stream = cuda.Stream()
            jobs = [("generator", bundle.generator_path, p) for p in args.precision]
            jobs.append(("a2l", bundle.a2l_path, "fp32"))
            if trt is None:
                jobs = []
            for name, onnx_path, precision in jobs:
                spec = EngineSpec(precision, batches)
                try:
                    path = cached_engine(trt, onnx_path, spec, dev.info, args.cache_dir, build=precision != "int8")
                except BackendUnavailable as exc:
                    skipped.append(f"{name} {precision}: {exc}")
                    continue
                model = TrtModel(trt, cuda, path.read_bytes(), stream, name)
                try:
                    for batch in batches:
                        t = bench_engine(cuda, stream, model, batch, args.runs, args.warmup)
                        for timing, ms in t.items():
                            row = {"kind": "engine", "model": name, "precision": precision, "batch": batch}
                            results.append({**row, "timing": timing, **_stats(ms, batch)})
                finally:
                    model.close()
        w, h = (int(v) for v in args.frame.lower().split("x"))
        rows, max_diff = bench_kernel(cuda, w, h, bundle.crop_size, args.runs, args.warmup)
        results += rows
    finally:
        dev.release()
    return {
        "gpu": {"name": dev.info.name, "compute_capability": dev.info.compute_capability},
        "tensorrt": str(trt.__version__) if trt is not None else None,
        "runs": args.runs,
        "results": results,
        "skipped": skipped,
        "kernel_max_abs_vs_paste": max_diff,
    }


def print_table(r: dict[str, Any]) -> None:
    g = r["gpu"]
    print(f"GPU {g['name']} (sm {g['compute_capability']}), TensorRT {r['tensorrt'] or '-'}, {r['runs']} runs")
    print(f"{'what':11s} {'config':32s} {'p50_ms':>8s} {'p95_ms':>8s} {'per_frame_ms':>13s}")
    for x in r["results"]:
        if x["kind"] == "engine":
            cfg = f"{x['model']} {x['precision']} b{x['batch']} {x['timing']}"
        else:
            cfg = f"{x['format']} {x['frame'][0]}x{x['frame'][1]} box {x['box'][0]}x{x['box'][1]} {x['timing']}"
        print(f"{x['kind']:11s} {cfg:32s} {x['p50_ms']:8.3f} {x['p95_ms']:8.3f} {x['per_frame_ms']:13.3f}")
    for s in r["skipped"]:
        print(f"skipped: {s}")
    print(f"kernel max abs diff vs blend.paste: {r['kernel_max_abs_vs_paste']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="TensorRT engine and CUDA kernel timings")
    p.add_argument("--model", type=Path, default=None, help="model bundle (default engines/default)")
    p.add_argument("--precision", nargs="+", default=["fp16", "int8"], choices=["fp32", "fp16", "int8"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 5])
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--frame", default="1280x720", help="frame size for the kernel, WxH")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--kernel-only", action="store_true", help="time the blending kernel only (no TensorRT)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        r = run(args)
    except (BackendUnavailable, ModelError) as exc:
        print(f"benchmarks.gpu: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print_table(r)
    write_json(args.json, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
