"""Data-parallel training under torchrun (DDP); a no-op in a single process.

    torchrun --nproc-per-node 2 -m training.train_gen --data data2/train --out runs/gen --threads 1

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init` joins the process group when ``WORLD_SIZE`` > 1 (backend gloo: the trainers run
on the CPU; ``RTDUB_DIST_BACKEND`` overrides it). Without those variables, or with one
process, :func:`init` returns a context whose every method is the identity, so a plain
``python -m training.train_x`` run is exactly what it was before.

- **Seeds.** Rank r seeds numpy, random and torch with ``seed + RANK_SEED_STRIDE * r``, so
  every rank draws its own batches; rank 0 keeps the plain seed. The replicas still start
  equal: DistributedDataParallel broadcasts rank 0's parameters and buffers when it wraps
  the model (so rank 0's weights are those of a single-process run with the same seed).
- **Steps.** DDP averages the gradients over the ranks, so every replica takes the same
  optimizer step. ``--batch`` is per process: the effective batch is world size × batch.
  BatchNorm statistics are per rank (not synchronised); DDP copies rank 0's running
  statistics to the others at every forward.
- **Side effects.** Only rank 0 logs at INFO, evaluates and writes checkpoints; the others
  log warnings only. Decisions that depend on the wall clock (``--minutes``) are agreed by
  all ranks (:meth:`Dist.any`), otherwise one rank would stop while the others wait for it.
- **Teardown.** :meth:`Dist.finish` compares a digest of every replica's parameters (logged
  by rank 0; an error if they differ); :func:`run` then waits for all ranks and leaves the
  process group.
  ``--replica-dir DIR`` makes every rank also write its parameters at the start and at the
  end (``rank{r}-start.safetensors``, ``rank{r}-end.safetensors``) to check that by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn

from .common import setup as common_setup

logger = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1_000_003  # rank r's data seed: seed + stride·r (rank 0: the seed itself)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replica-dir",
        type=Path,
        default=None,
        help="every process writes its parameters here at the start and the end (checks DDP replicas)",
    )


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. ``Dist()`` is a single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    replica_dir: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        return seed + RANK_SEED_STRIDE * self.rank

    def setup(self, seed: int, threads: int) -> np.random.Generator:
        """training.common.setup with this rank's seed; ranks other than 0 log warnings only."""
        rng = common_setup(self.seed(seed), threads)
        if not self.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        return rng

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` itself in a single process, else DDP around it (which broadcasts rank 0's
        parameters and buffers). Train through the returned module; save ``module``."""
        wrapped = nn.parallel.DistributedDataParallel(module) if self.enabled else module
        self._dump(module, "start")
        return wrapped

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on at least one (a collective: call it on all)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def digests(self, module: nn.Module) -> list[str]:
        """sha256 of every rank's parameters, in rank order (a collective)."""
        own = parameter_digest(module)
        if not self.enabled:
            return [own]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, own)
        return [str(d) for d in out]

    def finish(self, module: nn.Module) -> bool:
        """End of training on every rank: compare the replicas, write them if asked. Returns
        whether all replicas are identical."""
        self._dump(module, "end")
        ds = self.digests(module)
        same = len(set(ds)) == 1
        if self.enabled and self.is_main:
            if same:
                logger.info("%d replicas identical (parameters sha256 %s)", self.world_size, ds[0][:16])
            else:
                logger.error("replicas differ: %s", [d[:16] for d in ds])
        return same

    def close(self) -> None:
        """Leave the process group (no collective: also safe after an error on one rank)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def _dump(self, module: nn.Module, tag: str) -> None:
        if self.replica_dir is None:
            return
        self.replica_dir.mkdir(parents=True, exist_ok=True)
        state = {k: p.detach().contiguous().clone() for k, p in module.named_parameters()}
        save_file(state, str(self.replica_dir / f"rank{self.rank}-{tag}.safetensors"))


def parameter_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(train: Callable[[argparse.Namespace, Dist], int], args: argparse.Namespace) -> int:
    """``train(args, dist)`` in this process's place in the job: join the process group, train,
    wait for every rank (rank 0 may still be writing its last files), leave the group. After
    an error the group is left at once; torchrun then stops the other ranks."""
    ctx = init(args.replica_dir)
    try:
        rc = train(args, ctx)
        ctx.barrier()
    finally:
        ctx.close()
    if ctx.enabled:
        # Every file is written and every rank has left the group. torch's C++ threads
        # sometimes abort at interpreter teardown under torchrun ("terminate called without an
        # active exception", SIGABRT, seen in about one CI run in two after a clean finish),
        # which torchrun reports as a failed job: end the process here instead.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def init(replica_dir: Path | None = None, backend: str | None = None) -> Dist:
    """Join the torchrun job described by the environment, if there is one."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(replica_dir=replica_dir)
    try:
        rank = int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise RuntimeError(f"WORLD_SIZE={world} but RANK is missing or malformed ({exc})") from exc
    if not dist.is_initialized():
        dist.init_process_group(backend or env.get("RTDUB_DIST_BACKEND", "gloo"), rank=rank, world_size=world)
    return Dist(rank=rank, world_size=world, local_rank=local, replica_dir=replica_dir)
