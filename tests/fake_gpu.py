"""Stand-ins for pycuda and tensorrt, so that the GPU code's own logic (staging, pointers,
profiles, buffer slicing, caching, calibration flow) runs on a machine without a GPU.

"Device" memory is host memory (a numpy buffer whose address is the device pointer), kernels
are handed to a Python callback (the CPU harness for the blending kernel), and an "engine" is
the ONNX model run by onnxruntime on the tensors at the addresses the code set. They check the
calls the way the real libraries would fail on them (shapes outside the profile, missing
addresses, grids not covering the box), not the libraries' numerics.
"""

from __future__ import annotations

import ctypes
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class FakeAlloc:
    def __init__(self, nbytes: int) -> None:
        self.buf = np.zeros(max(1, int(nbytes)), np.uint8)
        self.freed = False

    def __int__(self) -> int:
        return int(self.buf.ctypes.data)

    def free(self) -> None:
        self.freed = True


def at(ptr: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """The array of ``shape`` at raw address ``ptr`` (a view, no copy)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = (ctypes.c_uint8 * n).from_address(int(ptr))
    return np.frombuffer(memoryview(raw).cast("B"), dt).reshape(shape)


def fake_pycuda(
    kernel: Callable[[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]], None] | None = None,
) -> dict[str, types.ModuleType]:
    """sys.modules entries for pycuda, pycuda.driver and pycuda.compiler."""
    launches: list[str] = []

    class Function:
        def __init__(self, name: str) -> None:
            self.name, self.fmt = name, ""

        def prepare(self, fmt: str) -> None:
            self.fmt = fmt

        def prepared_async_call(self, grid: tuple[int, ...], block: tuple[int, ...], stream: Any, *a: Any) -> None:
            assert len(a) == len(self.fmt), (self.name, len(a), self.fmt)
            launches.append(self.name)
            if kernel is not None:
                kernel(self.name, grid, block, a)

    class Module:
        def get_function(self, name: str) -> Function:
            return Function(name)

    class Ctx:
        depth = 0

        def push(self) -> None:
            Ctx.depth += 1

        def pop(self) -> None:
            assert Ctx.depth > 0, "pop without push"
            Ctx.depth -= 1

        def detach(self) -> None: ...

    class Device:
        def __init__(self, i: int) -> None:
            self.i = i

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return "Emulated GPU"

        def compute_capability(self) -> tuple[int, int]:
            return (8, 6)

        def retain_primary_context(self) -> Ctx:
            return Ctx()

    class Stream:
        handle = 1234

        def synchronize(self) -> None: ...

    class Event:
        def record(self, stream: Any = None) -> None: ...

        def synchronize(self) -> None: ...

        def time_since(self, other: Any) -> float:
            return 0.0

    def to_device(a: np.ndarray) -> FakeAlloc:
        d = FakeAlloc(a.nbytes)
        d.buf[: a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        return d

    def htod(dev: Any, host: np.ndarray, stream: Any = None) -> None:
        assert host.flags.c_contiguous
        at(int(dev), (host.nbytes,), np.uint8)[:] = host.reshape(-1).view(np.uint8)

    def dtoh(host: np.ndarray, dev: Any, stream: Any = None) -> None:
        assert host.flags.c_contiguous
        host.reshape(-1).view(np.uint8)[:] = at(int(dev), (host.nbytes,), np.uint8)

    drv = types.ModuleType("pycuda.driver")
    drv.__dict__.update(
        init=lambda: None,
        Device=Device,
        Stream=Stream,
        Event=Event,
        Error=RuntimeError,
        to_device=to_device,
        mem_alloc=FakeAlloc,
        pagelocked_empty=lambda shape, dtype: np.zeros(shape, dtype),
        memcpy_htod_async=htod,
        memcpy_dtoh_async=dtoh,
        memcpy_htod=htod,
        module_from_file=lambda path: Module(),
        launches=launches,
        Ctx=Ctx,
    )
    comp = types.ModuleType("pycuda.compiler")
    comp.__dict__["SourceModule"] = lambda src, **kw: Module()
    pkg = types.ModuleType("pycuda")
    pkg.__dict__.update(driver=drv, compiler=comp)
    return {"pycuda": pkg, "pycuda.driver": drv, "pycuda.compiler": comp}


def fake_tensorrt(version: str = "10.9.0") -> types.ModuleType:
    """A tensorrt stand-in: plans are JSON, engines run the ONNX file with onnxruntime."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    builds: list[dict[str, Any]] = []

    def session(path: str) -> Any:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # quick to create
        so.intra_op_num_threads = 1
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None: ...

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16 = "fp16"
        INT8 = "int8"

    class TensorIOMode:
        INPUT = "input"
        OUTPUT = "output"

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None: ...

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self) -> None:
            self.path: str | None = None
            self.inputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, log: Logger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            sess = session(path)
            self.network.path = path
            self.network.inputs = [Tensor(i.name, (-1, *i.shape[1:])) for i in sess.get_inputs()]
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
            assert lo[0] <= opt[0] <= hi[0]
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = bytes(blob)

        def serialize(self) -> bytes:
            return self.blob + b"+"

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.profiles: list[Profile] = []
            self.int8_calibrator: Any = None
            self.calibration_profile: Profile | None = None
            self.timing: TimingCache | None = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            assert size > 0

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, p: Profile) -> int:
            self.profiles.append(p)
            return len(self.profiles) - 1

        def set_calibration_profile(self, p: Profile) -> None:
            self.calibration_profile = p

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> None:
            self.timing = cache

        def get_timing_cache(self) -> TimingCache:
            assert self.timing is not None
            return self.timing

    class Builder:
        def __init__(self, log: Logger) -> None: ...

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calibrated = False
            if BuilderFlag.INT8 in config.flags:
                cal, prof = config.int8_calibrator, config.calibration_profile
                assert cal is not None and prof is not None
                if cal.read_calibration_cache() is None:
                    names = [t.name for t in network.inputs]
                    batches = 0
                    while (ptrs := cal.get_batch(names)) is not None:
                        for name, ptr in zip(names, ptrs, strict=True):
                            shape = prof.shapes[name][1]  # calibration runs at the opt shape
                            assert np.isfinite(at(ptr, shape)).all()
                        assert cal.get_batch_size() == prof.shapes[names[0]][1][0]
                        batches += 1
                    assert batches > 0
                    cal.write_calibration_cache(b"calibration table")
                calibrated = True
            plan = {
                "onnx": network.path,
                "profiles": [[p.shapes[t.name] for t in network.inputs] for p in config.profiles],
                "flags": sorted(config.flags),
                "calibrated": calibrated,
            }
            builds.append(plan)
            return json.dumps(plan).encode()

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.profile = 0
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_optimization_profile_async(self, p: int, stream: int) -> bool:
            assert 0 <= p < self.engine.num_optimization_profiles
            self.profile = p
            return True

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            lo, _, hi = self.engine.get_tensor_profile_shape(name, self.profile)
            if not (lo[0] <= shape[0] <= hi[0]) or tuple(shape[1:]) != tuple(lo[1:]):
                raise ValueError(f"{name} {shape} outside profile {self.profile}: {lo}..{hi}")
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shapes[name]

        def execute_async_v3(self, stream: int) -> bool:
            e = self.engine
            feeds = {n: at(self.addresses[n], self.shapes[n]).copy() for n in e.input_names}
            for name, y in zip(e.output_names, e.sess.run(e.output_names, feeds), strict=True):
                at(self.addresses[name], y.shape)[...] = y
                self.shapes[name] = y.shape
            return True

    class Engine:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            self.sess = session(plan["onnx"])
            self.input_names = [i.name for i in self.sess.get_inputs()]
            self.output_names = [o.name for o in self.sess.get_outputs()]
            self.static = {x.name: tuple(x.shape[1:]) for x in [*self.sess.get_inputs(), *self.sess.get_outputs()]}

        @property
        def num_io_tensors(self) -> int:
            return len(self.input_names) + len(self.output_names)

        def get_tensor_name(self, i: int) -> str:
            return [*self.input_names, *self.output_names][i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if name in self.input_names else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, *self.static[name])

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.plan["profiles"])

        def get_tensor_profile_shape(self, name: str, p: int) -> list[tuple[int, ...]]:
            i = self.input_names.index(name)
            return [tuple(s) for s in self.plan["profiles"][p][i]]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, log: Logger) -> None: ...

        def deserialize_cuda_engine(self, plan: bytes) -> Engine:
            return Engine(json.loads(bytes(plan)))

    trt.__dict__.update(
        __version__=version,
        Logger=Logger,
        MemoryPoolType=MemoryPoolType,
        BuilderFlag=BuilderFlag,
        TensorIOMode=TensorIOMode,
        IInt8EntropyCalibrator2=IInt8EntropyCalibrator2,
        OnnxParser=OnnxParser,
        Builder=Builder,
        Runtime=Runtime,
        nptype=lambda dt: np.float32,
        builds=builds,
    )
    return trt


def engine_files(cache: Path) -> list[str]:
    return sorted(p.name for p in Path(cache).glob("*.engine"))


def harness_kernels(lib: Any) -> Callable[[str, tuple[int, ...], tuple[int, ...], tuple[Any, ...]], None]:
    """A kernel callback for :func:`fake_pycuda` that runs blend.cu's kernels through the CPU
    harness library (rtdub/render/cuda/harness.cpp) with the launch's own arguments."""
    vp, fp, dp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_double)

    def tail(a: tuple[Any, ...]) -> list[Any]:
        """crop, layout, size, mask, m0..m5, d0..d2 -> the harness's arguments (m, delta by pointer)."""
        m = np.array([float(x) for x in a[4:10]], np.float64)
        d = np.array([float(x) for x in a[10:13]], np.float32)
        return [vp(int(a[0])), int(a[1]), int(a[2]), ctypes.cast(vp(int(a[3])), fp), m.ctypes.data_as(dp),
                d.ctypes.data_as(fp), m, d]  # fmt: skip

    def run(name: str, grid: tuple[int, ...], block: tuple[int, ...], a: tuple[Any, ...]) -> None:
        if name == "rtdub_blend_rgb":
            w, h, t = int(a[3]), int(a[4]), tail(a[5:])
            lib.rtdub_harness_blend_rgb(vp(int(a[0])), int(a[1]), int(a[2]), w, h, *t[:6])
        elif name == "rtdub_blend_luma":
            w, h, t = int(a[2]), int(a[3]), tail(a[4:])
            lib.rtdub_harness_blend_luma(vp(int(a[0])), int(a[1]), w, h, *t[:6])
        elif name == "rtdub_blend_chroma":
            w, h, t = int(a[4]), int(a[5]), tail(a[6:])
            lib.rtdub_harness_blend_chroma(vp(int(a[0])), vp(int(a[1])), int(a[2]), int(a[3]), w, h, *t[:6])
        else:
            raise AssertionError(f"unknown kernel {name}")
        assert grid[0] * block[0] >= w and grid[1] * block[1] >= h  # the grid covers the box

    return run
