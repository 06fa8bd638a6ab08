"""The trainers under torchrun: two CPU processes (gloo on 127.0.0.1) train for a few steps
on generated shards, and their replicas must hold identical parameters that moved away from
the initial ones. Each rank writes its own parameters (``--replica-dir``), so the comparison
is made here, not by the code under test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402

from .factories import prepared_shard  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    for i in range(2):
        prepared_shard(d / f"clip{i}.npz", 2.4, seed=i)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SCRIPTS = {
    "training.train_a2l": ["--steps", "4", "--batch", "8", "--save-every", "4"],
    "training.train_gen": ["--steps", "3", "--batch", "2", "--base", "8"],
    "training.train_sync": ["--steps", "3", "--batch", "8", "--run-length", "4", "--width", "8", "--embed", "32"],
}


def torchrun(module: str, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 -m module args`` on 127.0.0.1 (gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        module,
        *args,
    ]
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()  # torchrun stops its workers on SIGTERM
            out, err = proc.communicate(timeout=60)
            err += "\n(timed out)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("module", list(SCRIPTS))
def test_two_replicas_stay_identical(tmp_path: Path, shards: Path, module: str) -> None:
    reps, out = tmp_path / "replicas", tmp_path / "run"
    common = ["--data", str(shards), "--dev", str(shards), "--threads", "1", "--out", str(out)]
    res = torchrun(module, [*common, *SCRIPTS[module], "--replica-dir", str(reps)], tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    start = [load_file(str(reps / f"rank{r}-start.safetensors")) for r in range(2)]
    end = [load_file(str(reps / f"rank{r}-end.safetensors")) for r in range(2)]
    names = sorted(start[0])
    assert names and all(sorted(s) == names for s in (*start, *end))
    # DDP broadcast rank 0's initial weights (rank 1 was seeded differently)
    assert all(torch.equal(start[0][k], start[1][k]) for k in names)
    # same steps on both replicas, although each rank drew its own batches
    differing = [k for k in names if not torch.equal(end[0][k], end[1][k])]
    assert not differing, differing
    moved = [k for k in names if not torch.equal(start[0][k], end[0][k])]
    assert len(moved) >= len(names) // 2, f"only {len(moved)}/{len(names)} parameter tensors changed"
    # only rank 0 wrote a checkpoint, and it holds the replicas' weights (train_sync trains
    # the expert through a wrapper module whose parameter names start with "model.", train_gen
    # the generator through one that adds its fields as an output, "gen.")
    saved = load_file(str(out / "model.safetensors"))
    prefix = {"training.train_sync": "model.", "training.train_gen": "gen."}.get(module, "")
    assert all(torch.equal(saved[k.removeprefix(prefix)], end[0][k]) for k in names)
    assert "2 replicas identical" in res.stderr
