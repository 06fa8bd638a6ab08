"""The host a bench ran on: CPU, memory, load, Python and package versions, git commit.

Latency and throughput figures are only comparable between runs on the same machine under the
same load with the same libraries, so every report carries this record (``bench.json``
``machine``), and a run started on a busy host says so in its notes. ``benchmarks/soak.py``
records the same facts for its runs.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGES = (
    "numpy", "onnxruntime", "mediapipe", "av", "aiortc", "opencv-python-headless",
    "scikit-image", "matplotlib", "tensorrt", "pycuda",
)  # fmt: skip
BUSY_LOAD_SHARE = 0.5  # 1-min load average above this share of the usable cores: timings flagged


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git(*args: str) -> str | None:
    from ...model import SOURCE_ROOT as root

    try:
        res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    """The record of the host, taken at the start of a run."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "memory_gb": _mem_total_gb(),
        "load_average_1_5_15": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
    }


def busy_note(machine: dict[str, Any]) -> str | None:
    """The note of a run started on a busy host (``machine`` from :func:`machine_info`), or None."""
    load = machine.get("load_average_1_5_15")
    if load and load[0] > BUSY_LOAD_SHARE * machine["cores_usable"]:
        return (
            f"the machine was busy at the start (1-min load average {load[0]} on {machine['cores_usable']} "
            "cores): timings are inflated and not comparable"
        )
    return None
