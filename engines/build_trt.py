"""Build the TensorRT engines of a model bundle (TensorRT 10 Python API), ahead of time.

    python -m engines.build_trt --model engines/default --precision fp16 int8 --shards data2/train
        [--batches 1 5] [--calib-samples 500] [--cache-dir ~/.cache/rtdub/trt] [--device 0] [--force]

For each requested precision it builds the generator engine, and once the audio-to-lip engine
(fp32, it is tiny), into the engine cache that ``--backend tensorrt`` reads
(rtdub/backends/tensorrt.py):

- one optimization profile per ``--batches`` entry, (min, opt, max) = (1, 1, 1) and (2, 5, 5)
  by default, so both the per-frame path and five-frame batches get tuned kernels;
- FP16: ``BuilderFlag.FP16``; INT8: ``BuilderFlag.INT8`` (+FP16 for the layers TensorRT keeps
  out of INT8) with an ``IInt8EntropyCalibrator2`` that feeds real generator inputs built from
  prepared shards (engines/calibration.py: aligned crops, masked pose, a reference one second
  away, the clip's own lip units). Its scale table is written to a calibration cache next to
  the engines and reused by later builds of the same model;
- a timing cache per GPU and TensorRT version, read before and written after every build, so a
  rebuild (another precision, a retrained model) skips most kernel timing;
- engines are keyed by the ONNX file's sha256, precision, profiles, GPU name and compute
  capability and TensorRT version; an engine already in the cache is not rebuilt (``--force``
  rebuilds it). A ``.json`` sidecar records the key and the build time.

Without TensorRT (or pycuda, or a GPU) it exits with status 2 and a one-line error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rtdub.backends.tensorrt import (
    DeviceContext,
    EngineSpec,
    cached_engine,
    default_cache_dir,
    file_sha256,
    import_pycuda,
    import_tensorrt,
)
from rtdub.exceptions import BackendUnavailable, ModelError
from rtdub.model import ModelBundle, load_bundle

from .calibration import generator_samples, list_shards

logger = logging.getLogger(__name__)


def calibration_cache_path(cache_dir: Path, model: Path, samples: int, seed: int) -> Path:
    return Path(cache_dir) / f"calib-{Path(model).stem}-{file_sha256(model)[:16]}-n{samples}-s{seed}.cache"


def make_calibrator(
    trt: Any, cuda: Any, bundle: ModelBundle, shards: list[Path], samples: int, batch: int, cache: Path, seed: int = 0
) -> Any:
    """An ``IInt8EntropyCalibrator2`` over real generator inputs, ``batch`` frames per call.

    With an existing ``cache`` TensorRT takes the scales from it and never asks for a batch, so
    the shards are only read when a batch is first requested."""

    class ShardCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches: list[dict[str, np.ndarray]] | None = None
            self._i = 0
            self._device: dict[str, Any] = {}

        def _load(self) -> list[dict[str, np.ndarray]]:
            if self._batches is None:
                n = max(1, samples // batch)
                self._batches = [s.feeds() for s in generator_samples(shards, bundle, n, batch=batch, seed=seed)]
                for name, arr in self._batches[0].items():
                    self._device[name] = cuda.mem_alloc(arr.nbytes)
                logger.info("int8 calibration data", extra={"batches": len(self._batches), "batch": batch})
            return self._batches

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            data = self._load()
            if self._i >= len(data):
                return None
            feeds = data[self._i]
            self._i += 1
            for name in names:
                cuda.memcpy_htod(self._device[name], np.ascontiguousarray(feeds[name]))
            return [int(self._device[name]) for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, blob: Any) -> None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(bytes(memoryview(blob)))

    return ShardCalibrator()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="build TensorRT engines for a model bundle")
    p.add_argument("--model", type=Path, default=Path("engines/default"), help="model bundle directory")
    p.add_argument("--precision", nargs="+", default=["fp16"], choices=["fp32", "fp16", "int8"])
    p.add_argument("--shards", type=Path, default=None, help="prepared shards for INT8 calibration")
    p.add_argument("--calib-samples", type=int, default=500, help="frames fed to the INT8 calibrator")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 5], help="one optimization profile each")
    p.add_argument("--workspace-mb", type=int, default=1024)
    p.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default ~/.cache/rtdub/trt)")
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild engines that are already cached")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def fail(msg: str) -> int:
        print(f"build_trt: error: {msg}", file=sys.stderr)
        return 2

    if "int8" in args.precision and args.shards is None:
        return fail("--precision int8 needs --shards (prepared crops for calibration)")
    try:
        trt = import_tensorrt()
        cuda = import_pycuda()
        bundle = load_bundle(args.model)
        shards = list_shards(args.shards) if args.shards is not None else []
        specs = [EngineSpec(pr, tuple(args.batches), args.workspace_mb) for pr in args.precision]
        dev = DeviceContext(cuda, args.device)
    except (BackendUnavailable, ModelError, FileNotFoundError, ValueError) as exc:
        return fail(str(exc).splitlines()[0])
    cache_dir = args.cache_dir or default_cache_dir()
    rows = []
    try:
        with dev:
            jobs = [("a2l", bundle.a2l_path, EngineSpec("fp32", tuple(args.batches), args.workspace_mb))]
            jobs += [("generator", bundle.generator_path, s) for s in specs]
            for name, onnx_path, spec in jobs:
                factory: Callable[[], Any] | None = None
                if spec.precision == "int8":  # calibrated on the profile of the largest batch
                    ccache = calibration_cache_path(cache_dir, onnx_path, args.calib_samples, args.seed)
                    factory = partial(
                        make_calibrator,
                        trt,
                        cuda,
                        bundle,
                        shards,
                        args.calib_samples,
                        spec.batches[-1],
                        ccache,
                        args.seed,
                    )

                t0 = time.perf_counter()
                path = cached_engine(
                    trt, onnx_path, spec, dev.info, cache_dir, build=True, calibrator_factory=factory, force=args.force
                )
                rows.append((name, spec.precision, path, time.perf_counter() - t0))
    except (BackendUnavailable, ModelError) as exc:
        return fail(str(exc).splitlines()[0])
    finally:
        dev.release()
    print(f"TensorRT {trt.__version__} on {dev.info.name} (sm {dev.info.compute_capability}); cache {cache_dir}")
    print(f"{'model':10s} {'precision':9s} {'seconds':>8s} {'MB':>7s}  engine")
    for name, prec, path, secs in rows:
        print(f"{name:10s} {prec:9s} {secs:8.1f} {path.stat().st_size / 1e6:7.2f}  {path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
