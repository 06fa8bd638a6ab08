"""TensorRT backend (GPU): both model stages as TensorRT engines, plus the engine cache.

Engines are built from the bundle's ONNX files with the TensorRT 10 Python API and cached on
disk, keyed by the ONNX file's sha256, the precision, the batch profiles, the GPU (name and
compute capability) and the TensorRT version: a cached engine is only ever loaded on the GPU
and TensorRT it was built for. ``python -m engines.build_trt`` builds them ahead of time (and is
the only way to get INT8 generator engines, which need calibration crops); the backend builds a
missing FP16/FP32 engine on first use, which takes a minute or two.

Each engine has one optimization profile per batch size in ``batches`` (default 1 and 5):
profile k covers batches ``batches[k-1]+1 .. batches[k]`` and is tuned for ``batches[k]``. The
backend keeps one execution context per profile, page-locked host buffers and device buffers
sized for the largest batch, and one CUDA stream: inputs are copied host->device
asynchronously, the engine is enqueued with ``execute_async_v3`` on the tensors' addresses,
outputs come back asynchronously, and the call waits on the stream once.

Options come from the environment, since the CLI's ``--backend tensorrt`` has no others:

    RTDUB_TRT_PRECISION  fp16 (default), int8 or fp32: the generator engine's precision
    RTDUB_TRT_CACHE      engine cache directory (default ~/.cache/rtdub/trt)
    RTDUB_TRT_BUILD      0 to fail instead of building a missing engine
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..exceptions import BackendUnavailable, ModelError
from ..model import ModelBundle
from .base import Backend, BackendConfig

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
TRT_HINT = "pip install tensorrt==10.* (or pip install 'rtdub[gpu]')"
PYCUDA_HINT = "pip install pycuda (or pip install 'rtdub[gpu]')"


# ---- imports and the device ---------------------------------------------------------------
def import_tensorrt() -> Any:
    """The tensorrt module (10.x), or BackendUnavailable saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT 10 is not installed: {TRT_HINT}") from exc
    major = int(str(trt.__version__).split(".")[0])
    if major != 10:
        # TensorRT 11 removed the FP16/INT8 builder flags and the calibrators this code uses
        raise BackendUnavailable(f"TensorRT {trt.__version__} found, the TensorRT backend needs 10.x: {TRT_HINT}")
    return trt


def import_pycuda() -> Any:
    """pycuda.driver, initialised, with at least one device; BackendUnavailable otherwise."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(f"pycuda is not installed: {PYCUDA_HINT}") from exc
    try:
        cuda.init()
        n = cuda.Device.count()
    except Exception as exc:  # pycuda._driver.Error: no driver, no device
        raise BackendUnavailable(f"CUDA is not usable here (no NVIDIA driver or GPU?): {exc}") from exc
    if n == 0:
        raise BackendUnavailable("no CUDA device found")
    return cuda


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.0"
    index: int

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


class DeviceContext:
    """The device's primary CUDA context (shared with TensorRT), pushed around each use so
    that any worker thread can drive it."""

    def __init__(self, cuda: Any, index: int) -> None:
        try:
            dev = cuda.Device(index)
            self.info = GpuInfo(dev.name(), "{}.{}".format(*dev.compute_capability()), index)
            self._ctx = dev.retain_primary_context()
        except Exception as exc:
            raise BackendUnavailable(f"CUDA device {index} is not usable: {exc}") from exc

    def __enter__(self) -> DeviceContext:
        self._ctx.push()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.pop()

    def release(self) -> None:
        self._ctx.detach()


# ---- engine specs and the cache -------------------------------------------------------------
@dataclass(frozen=True)
class EngineSpec:
    precision: str = "fp16"
    batches: tuple[int, ...] = (1, 5)  # one optimization profile per entry (see module doc)
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if not self.batches or list(self.batches) != sorted(set(self.batches)) or self.batches[0] < 1:
            raise ValueError(f"batches {self.batches}: expected increasing positive sizes")

    def profiles(self) -> list[tuple[int, int, int]]:
        """(min, opt, max) batch of each optimization profile."""
        out, lo = [], 1
        for b in self.batches:
            out.append((lo, b, b))
            lo = b + 1
        return out


@dataclass(frozen=True)
class EngineKey:
    model: str  # ONNX file name (for humans)
    model_sha256: str
    precision: str
    batches: tuple[int, ...]
    gpu: str
    compute_capability: str
    tensorrt: str

    def filename(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-")
        stem = Path(self.model).stem
        b = "_".join(str(x) for x in self.batches)
        cc = self.compute_capability.replace(".", "")
        return f"{stem}-{self.model_sha256[:16]}-{self.precision}-b{b}-{slug}-sm{cc}-trt{self.tensorrt}.engine"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("RTDUB_TRT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtdub" / "trt"


def engine_key(onnx_path: Path, spec: EngineSpec, gpu: GpuInfo, trt_version: str) -> EngineKey:
    return EngineKey(
        Path(onnx_path).name,
        file_sha256(Path(onnx_path)),
        spec.precision,
        spec.batches,
        gpu.name,
        gpu.compute_capability,
        trt_version,
    )


def timing_cache_path(cache_dir: Path, gpu: GpuInfo, trt_version: str) -> Path:
    """Timing caches depend on the GPU and TensorRT, not on the model: one per pair."""
    return Path(cache_dir) / f"timing-{gpu.slug}-sm{gpu.compute_capability.replace('.', '')}-trt{trt_version}.cache"


def _trt_logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def build_serialized(
    trt: Any,
    onnx_path: Path,
    spec: EngineSpec,
    timing_cache: Path | None = None,
    calibrator: Any = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine for ``spec``.

    ``timing_cache`` is read if present and written back after the build; ``calibrator`` (an
    ``IInt8Calibrator``) is required for INT8 and is run on the profile of the largest batch."""
    log = _trt_logger(trt)
    builder = trt.Builder(log)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if spec.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left out of INT8 run in FP16
    profiles = []
    for lo, opt, hi in spec.profiles():
        prof = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            rest = tuple(int(d) for d in t.shape)[1:]
            if any(d < 0 for d in rest):
                raise ModelError(f"{onnx_path}: input {t.name} has dynamic dims besides the batch: {t.shape}")
            prof.set_shape(t.name, (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(prof)
        profiles.append(prof)
    if spec.precision == "int8":
        if calibrator is None:
            raise ValueError("an INT8 engine needs a calibrator (python -m engines.build_trt --shards ...)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profiles[-1])
    cache_blob = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    tcache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(tcache, ignore_mismatch=False)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"{onnx_path}: TensorRT failed to build a {spec.precision} engine (see its log above)")
    logger.info(
        "built TensorRT engine",
        extra={"model": str(onnx_path), "precision": spec.precision, "seconds": round(time.perf_counter() - t0, 1)},
    )
    if timing_cache is not None:
        atomic.write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


def cached_engine(
    trt: Any,
    onnx_path: Path,
    spec: EngineSpec,
    gpu: GpuInfo,
    cache_dir: Path | None = None,
    build: bool = True,
    calibrator_factory: Callable[[], Any] | None = None,
    force: bool = False,
) -> Path:
    """Path of the cached engine for (model, spec, GPU, TensorRT); built first if missing.

    Writes the engine and a ``.json`` sidecar with its full key and build facts."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = engine_key(onnx_path, spec, gpu, str(trt.__version__))
    path = cache_dir / key.filename()
    if path.is_file() and not force:
        return path
    if not build:
        raise BackendUnavailable(
            f"no cached {spec.precision} TensorRT engine for {onnx_path.name} on {gpu.name} in {cache_dir}: "
            f"run python -m engines.build_trt --model {onnx_path.parent} --precision {spec.precision}"
        )
    if spec.precision == "int8" and calibrator_factory is None:
        raise BackendUnavailable(
            f"no cached INT8 engine for {onnx_path.name} on {gpu.name}; INT8 needs calibration crops: "
            f"run python -m engines.build_trt --model {onnx_path.parent} --precision int8 --shards DIR"
        )
    logger.warning(
        "building a TensorRT engine (once per model, GPU and TensorRT version; takes a while)",
        extra={"model": str(onnx_path), "precision": spec.precision, "gpu": gpu.name},
    )
    t0 = time.perf_counter()
    plan = build_serialized(
        trt,
        onnx_path,
        spec,
        timing_cache_path(cache_dir, gpu, key.tensorrt),
        calibrator_factory() if calibrator_factory is not None else None,
    )
    atomic.write_bytes(path, plan)
    meta = {**asdict(key), "spec": asdict(spec), "build_seconds": round(time.perf_counter() - t0, 1)}
    atomic.write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())
    return path


# ---- running an engine ----------------------------------------------------------------------
class TrtModel:
    """One deserialized engine: a context per optimization profile, pinned host buffers and
    device buffers sized for the largest batch, all driven on one CUDA stream."""

    def __init__(self, trt: Any, cuda: Any, plan: bytes, stream: Any, name: str) -> None:
        self.name = name
        self._cuda = cuda
        self._stream = stream
        self._runtime = trt.Runtime(_trt_logger(trt))
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ModelError(f"{name}: TensorRT could not deserialize the engine (built by another version?)")
        e = self.engine
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        self.inputs = [n for n in names if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.max_batch: list[int] = []
        self.contexts = []
        for p in range(e.num_optimization_profiles):
            ctx = e.create_execution_context()
            ctx.set_optimization_profile_async(p, stream.handle)
            self.contexts.append(ctx)
            self.max_batch.append(int(e.get_tensor_profile_shape(self.inputs[0], p)[2][0]))
        stream.synchronize()
        top = max(self.max_batch)
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        for n in names:
            shape = (top, *(int(d) for d in tuple(e.get_tensor_shape(n))[1:]))
            dtype = np.dtype(trt.nptype(e.get_tensor_dtype(n)))
            self.host[n] = cuda.pagelocked_empty(shape, dtype)
            self.device[n] = cuda.mem_alloc(self.host[n].nbytes)

    def profile_for(self, batch: int) -> int:
        for p, hi in enumerate(self.max_batch):
            if batch <= hi:
                return p
        raise ValueError(f"{self.name}: batch {batch} exceeds the engine's largest profile ({max(self.max_batch)})")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = int(feeds[self.inputs[0]].shape[0])
        ctx = self.contexts[self.profile_for(batch)]
        cuda, stream = self._cuda, self._stream
        for n in self.inputs:
            x = feeds[n]
            view = self.host[n][:batch]
            if x.shape != view.shape:
                raise ValueError(f"{self.name}: input {n} of shape {x.shape}, expected {view.shape}")
            np.copyto(view, x, casting="same_kind")
            ctx.set_input_shape(n, view.shape)
            ctx.set_tensor_address(n, int(self.device[n]))
            cuda.memcpy_htod_async(self.device[n], view, stream)
        for n in self.outputs:
            ctx.set_tensor_address(n, int(self.device[n]))
        if not ctx.execute_async_v3(stream.handle):
            raise ModelError(f"{self.name}: TensorRT execution failed")
        outs = {}
        for n in self.outputs:
            view = self.host[n][:batch]
            cuda.memcpy_dtoh_async(view, self.device[n], stream)
            outs[n] = view
        stream.synchronize()
        return {n: v.copy() for n, v in outs.items()}  # the pinned buffers are reused next call

    def close(self) -> None:
        for buf in self.device.values():
            buf.free()
        self.device.clear()
        self.contexts.clear()
        self.engine = None


@dataclass(frozen=True)
class TensorRTOptions:
    precision: str = "fp16"  # the generator's; the audio-to-lip engine is always fp32 (tiny)
    cache_dir: Path | None = None
    build: bool = True
    batches: tuple[int, ...] = (1, 5)

    @staticmethod
    def from_env() -> TensorRTOptions:
        precision = os.environ.get("RTDUB_TRT_PRECISION", "fp16").lower()
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"RTDUB_TRT_PRECISION={precision!r}: choose one of {', '.join(PRECISIONS)}")
        cache = os.environ.get("RTDUB_TRT_CACHE")
        return TensorRTOptions(
            precision=precision,
            cache_dir=Path(cache) if cache else None,
            build=os.environ.get("RTDUB_TRT_BUILD", "1") != "0",
        )


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self, bundle: ModelBundle, config: BackendConfig | None = None, options: TensorRTOptions | None = None
    ) -> None:
        config = config or BackendConfig()
        options = options or TensorRTOptions.from_env()
        self.bundle = bundle
        self.options = options
        trt = import_tensorrt()
        cuda = import_pycuda()
        self._cuda = cuda
        self._dev = DeviceContext(cuda, config.device)
        self._device = config.device
        self.gpu = self._dev.info
        self._models: list[TrtModel] = []
        self._closed = False
        with self._dev:
            self._stream = cuda.Stream()
            try:
                self._a2l = self._load(trt, bundle.a2l_path, EngineSpec("fp32", options.batches), "a2l")
                self._gen = self._load(
                    trt, bundle.generator_path, EngineSpec(options.precision, options.batches), "generator"
                )
            except BaseException:
                self._release()
                raise
        logger.info(
            "tensorrt backend ready",
            extra={"gpu": self.gpu.name, "precision": options.precision, "tensorrt": trt.__version__},
        )

    def _load(self, trt: Any, onnx_path: Path, spec: EngineSpec, name: str) -> TrtModel:
        path = cached_engine(trt, onnx_path, spec, self.gpu, self.options.cache_dir, build=self.options.build)
        model = TrtModel(trt, self._cuda, path.read_bytes(), self._stream, f"{name} ({path.name})")
        self._models.append(model)
        return model

    @property
    def cuda_device(self) -> int | None:
        return self._device

    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        with self._dev:
            out = self._a2l.run({"mel": np.asarray(mel, np.float32), "lookahead": np.asarray(lookahead, np.float32)})
        return out["units"]

    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        with self._dev:
            out = self._gen.run(
                {
                    "pose": np.asarray(pose, np.float32),
                    "reference": np.asarray(reference, np.float32),
                    "units": np.asarray(units, np.float32),
                }
            )
        return out["face"]

    def reset(self) -> None:
        """No per-stream state lives in the engines; make sure nothing is still in flight."""
        with self._dev:
            self._stream.synchronize()

    def _release(self) -> None:
        for m in self._models:
            m.close()
        self._models.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._dev:
            self._stream.synchronize()
            self._release()
        self._dev.release()
