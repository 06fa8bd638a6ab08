"""The backend contract: synchronous, preallocated, resettable; one call per model stage."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BackendConfig:
    threads: int = 2  # intra-op threads
    device: int = 0  # GPU index for GPU backends


class Backend(ABC):
    """Runs the audio-to-lip and lip-to-face stages. Not thread-safe: one per stream.

    Call it from a worker thread (an executor), never from the event loop itself."""

    name: str = "base"

    @abstractmethod
    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        """mel (B, W, 80) float32, lookahead (B, 1) seconds -> units (B, U)."""

    @abstractmethod
    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        """pose, reference (B, 3, S, S) in [0, 1]; units (B, 5, U) -> faces (B, 3, S, S)."""

    @property
    def cuda_device(self) -> int | None:
        """The CUDA device the backend's outputs are made on, or None for a CPU backend (the
        pipeline then pastes on the CPU; on a device it uses the CUDA paste-back kernel)."""
        return None

    @property
    def has_fields(self) -> bool:
        """Whether :meth:`generate_fields` gives the fields (else the pipeline renders at S)."""
        return False

    def generate_fields(
        self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`generate` plus the fields the faces were composed from, (B, 6, S, S) (flow,
        mixing weight, colour; see rtdub/render/hires.py), or None when the model or the backend does
        not give them (the caller then renders at S)."""
        return self.generate(pose, reference, units), None

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless backends keep the default
        """Forget per-stream state (none for stateless backends)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions and device memory."""
