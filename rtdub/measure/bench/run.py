"""One ``rtdub bench`` run: the selected sections in order, then the outputs.

Outputs in ``cfg.out``: ``bench.json`` (machine, model, expert, config, every figure),
``bench_samples.json`` (the per-frame samples behind the percentiles), ``bench.md`` (tables) and
PNG plots. Generated clips and dubbed outputs live in a temporary directory and are deleted; no
media is written to ``cfg.out``. A section that raises is recorded as an error and the others
still run, so one broken measurement never hides the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import atomic
from .config import SECTIONS, BenchConfig
from .machine import busy_note, load_average, machine_info
from .provenance import load_expert, model_info
from .quality import lookahead, quality
from .report import markdown, plots
from .sections import Context, Progress, stage_latency, streaming, throughput

logger = logging.getLogger(__name__)

SCHEMA = "rtdub-bench/1"
SECTION_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "stage_latency": stage_latency,
    "throughput": throughput,
    "lookahead": lookahead,
    "quality": quality,
    "streaming": streaming,
}


def _jsonable(x: Any) -> Any:
    """``x`` with paths as strings, numpy values as Python ones and non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


@dataclass(frozen=True)
class BenchOutput:
    """The written report of a run and where its files are."""

    report: dict[str, Any]
    json_path: Path
    samples_path: Path
    markdown_path: Path
    plots: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        """No section failed (skipped or not measurable is fine)."""
        return not any(s.get("status") == "error" for s in self.report["sections"].values())


def run_bench(cfg: BenchConfig, progress: Progress | None = None, command: str | None = None) -> BenchOutput:
    """Run the selected sections of ``cfg`` and write the outputs into ``cfg.out``.

    A section that fails is recorded with ``status: error`` and the others still run."""
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    say = progress or (lambda msg: logger.info(msg))
    t0 = time.perf_counter()
    # the expert first: an explicit --expert that does not load fails before anything is written
    expert, expert_meta = load_expert(cfg) if {"lookahead", "quality"} & set(cfg.sections) else (None, {})
    cfg.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    notes = list(cfg.notes)
    if (busy := busy_note(machine)) is not None:
        notes.append(busy)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or "rtdub.measure.bench.run.run_bench",
        "machine": machine,
        "model": model_info(cfg.model),
        "config": _jsonable(dataclasses.asdict(cfg)),
        "notes": notes,
        "sections": {},
    }
    if expert_meta:
        report["expert"] = expert_meta
    with tempfile.TemporaryDirectory(prefix="rtdub-bench-") as tmp:
        ctx = Context(cfg, Path(tmp), say, expert=expert, expert_info=expert_meta)
        for name in SECTIONS:
            if name not in cfg.sections:
                continue
            ts = time.perf_counter()
            say(f"section {name}")
            try:
                res = SECTION_FUNCS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - record it, run the other sections
                logger.exception("bench section failed", extra={"section": name})
                res = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            res["section_wall_s"] = time.perf_counter() - ts
            report["sections"][name] = res
    report["wall_s"] = time.perf_counter() - t0
    machine["load_average_end"] = load_average()
    report = _jsonable(report)
    json_path = cfg.out / "bench.json"
    samples_path = cfg.out / "bench_samples.json"
    md_path = cfg.out / "bench.md"
    samples = _jsonable(ctx.samples)
    atomic.write_text(json_path, json.dumps(report, indent=1) + "\n")
    atomic.write_text(samples_path, json.dumps(samples) + "\n")
    atomic.write_text(md_path, markdown(report))
    pngs = plots(report, samples, cfg.out)
    logger.info("bench written", extra={"out": str(cfg.out), "wall_s": report["wall_s"]})
    return BenchOutput(report, json_path, samples_path, md_path, tuple(pngs))
