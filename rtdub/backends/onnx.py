"""onnxruntime backend (the default CPU path)."""

from __future__ import annotations

import logging

import numpy as np

from ..exceptions import BackendUnavailable, ModelError
from ..model import ModelBundle
from .base import Backend, BackendConfig

logger = logging.getLogger(__name__)


def make_session(path: str, threads: int) -> object:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: cannot load ONNX model ({exc})") from exc


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, bundle: ModelBundle, config: BackendConfig | None = None) -> None:
        config = config or BackendConfig()
        self.bundle = bundle
        self._a2l = make_session(str(bundle.a2l_path), config.threads)
        self._gen = make_session(str(bundle.generator_path), config.threads)
        outs = [o.name for o in self._gen.get_outputs()]  # type: ignore[attr-defined]
        # bundles exported before the fields output have "face" alone: they render at S
        self._gen_outputs = ["face", "fields"] if "fields" in outs else ["face"]

    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        out = self._a2l.run(  # type: ignore[attr-defined]
            ["units"],
            {
                "mel": np.ascontiguousarray(mel, np.float32),
                "lookahead": np.ascontiguousarray(lookahead, np.float32),
            },
        )
        return np.asarray(out[0])

    @property
    def has_fields(self) -> bool:
        return len(self._gen_outputs) == 2

    def _run_gen(
        self, names: list[str], pose: np.ndarray, reference: np.ndarray, units: np.ndarray
    ) -> list[np.ndarray]:
        out = self._gen.run(  # type: ignore[attr-defined]
            names,
            {
                "pose": np.ascontiguousarray(pose, np.float32),
                "reference": np.ascontiguousarray(reference, np.float32),
                "units": np.ascontiguousarray(units, np.float32),
            },
        )
        return [np.asarray(o) for o in out]

    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        return self._run_gen(["face"], pose, reference, units)[0]

    def generate_fields(
        self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        out = self._run_gen(self._gen_outputs, pose, reference, units)
        return out[0], (out[1] if len(out) > 1 else None)
