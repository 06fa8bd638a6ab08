"""The timing sections of ``rtdub bench`` and the state every section shares (:class:`Context`).

    stage_latency  per-stage ms (decode, track, align, mel, a2l, generator, blend, encode),
                   p50/p95/p99 over ``frames`` frames after ``warmup``, per backend and frame
                   size, from :func:`rtdub.dub.dub_file` (the code of ``rtdub dub``) on a
                   generated talking-head clip (H.264 in, H.264 out through media.VideoWriter)
    throughput     frames/s and multiple of real time of those runs, and (full mode) of a
                   shared clip dubbed with foreign speech
    streaming      glass-to-glass over loopback WebRTC: the streaming engine's own measurement
                   (``python -m rtdub.measure.loopbench``) in a child process

The sync and quality sections (lookahead, quality) are in :mod:`rtdub.measure.bench.quality`.
Each section takes the :class:`Context` and returns a JSON-ready dict with a ``status`` and a
``source`` naming the function and the code path its figures come from; per-frame samples go
to ``Context.samples`` (``bench_samples.json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...defaults import MEDIA_ENV
from .clips import FPS, find_clips, no_clips_reason, speech_track, write_talking_clip
from .config import BenchConfig

if TYPE_CHECKING:
    from ...engine import EngineConfig

BENCH_STAGES = ("decode", "track", "align", "mel", "a2l", "generator", "blend", "encode")
STREAMING_MODULE = "rtdub.measure.loopbench"

Progress = Callable[[str], None]


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """n, mean, p50/p95/p99 and max of ``values`` (all None but n for no values)."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = (float(v) for v in np.percentile(x, [50, 95, 99]))
    return {"n": int(x.size), "mean": float(x.mean()), "p50": p50, "p95": p95, "p99": p99, "max": float(x.max())}


@dataclass
class Context:
    """State shared by the sections of one run."""

    cfg: BenchConfig
    workdir: Path
    progress: Progress
    samples: dict[str, Any] = field(default_factory=dict)  # per-frame data for bench_samples.json
    clip_results: dict[str, Any] = field(default_factory=dict)  # reconstruction cache
    latency_runs: list[dict[str, Any]] = field(default_factory=list)
    expert: Any = None  # rtdub.measure.avsync.AVExpert, or None (LSE figures null with expert_info["reason"])
    expert_info: dict[str, Any] = field(default_factory=dict)
    _clips_done: bool = False
    _backends: tuple[list[str], list[dict[str, str]]] | None = None

    def backends(self) -> tuple[list[str], list[dict[str, str]]]:
        """The configured backends that load here, and why the others do not (probed once)."""
        if self._backends is None:
            self._backends = available_backends(self.cfg)
        return self._backends

    def first_backend(self) -> str:
        """The backend of the sections that measure one: the first that loads."""
        ok, skipped = self.backends()
        if not ok:
            raise RuntimeError(f"no backend available: {skipped}")
        return ok[0]


def available_backends(cfg: BenchConfig) -> tuple[list[str], list[dict[str, str]]]:
    """The backends of ``cfg`` that load here, and a note for each one that does not."""
    from ...backends import BackendConfig, get_backend
    from ...model import load_bundle

    bundle = load_bundle(cfg.model)
    ok: list[str] = []
    skipped: list[dict[str, str]] = []
    for name in cfg.backends:
        try:
            be = get_backend(name, bundle, BackendConfig(threads=cfg.threads))
        except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
            skipped.append({"backend": name, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        be.close()
        ok.append(name)
    return ok, skipped


def dub_engine(cfg: BenchConfig, backend: str) -> EngineConfig:
    """The engine ``rtdub dub`` runs (its offline preset), with the bench's model, ``backend``,
    threads and lookahead: the latency and throughput runs measure the command's own settings."""
    from ...engine import EngineConfig

    engine = replace(EngineConfig.offline(), model=cfg.model, backend=backend, threads=cfg.threads)
    return engine.with_options(lookahead_ms=cfg.quality_lookahead_ms)


def stage_latency(ctx: Context) -> dict[str, Any]:
    """Per-stage ms of ``rtdub dub`` (rtdub.dub.dub_file) on generated clips."""
    from ...dub import DubOptions, dub_file
    from ...media import write_wav

    cfg = ctx.cfg
    backends, skipped = ctx.backends()
    n_out = cfg.warmup + cfg.frames
    wav = write_wav(ctx.workdir / "latency_speech.wav", speech_track(n_out / FPS), 16000)
    runs: list[dict[str, Any]] = []
    for w, h in cfg.resolutions:
        # one second longer than the audio, so dub_file never loops (no spooling cost)
        clip = write_talking_clip(ctx.workdir / f"talking_{w}x{h}.mp4", w, h, n_out + int(FPS))
        for name in backends:
            ctx.progress(f"stage latency: {name} {w}x{h}, {cfg.warmup}+{cfg.frames} frames")
            out = ctx.workdir / f"dubbed_{name}_{w}x{h}.mp4"
            rep = dub_file(DubOptions(video=clip, audio=wav, output=out, engine=dub_engine(cfg, name)))
            out.unlink(missing_ok=True)
            measured = {k: list(rep.stage_ms.get(k, []))[cfg.warmup :] for k in BENCH_STAGES}
            lens = {len(v) for v in measured.values()}
            total: list[float] | None = None
            if len(lens) == 1:
                total = [float(sum(v)) for v in zip(*measured.values(), strict=True)]
            key = f"{name}_{w}x{h}"
            ctx.samples[f"stage_latency/{key}"] = {
                "stages_ms": measured,
                "total_ms": total,
                "source": "rtdub.dub.DubReport.stage_ms after warm-up",
            }
            run = {
                "key": key,
                "backend": name,
                "width": w,
                "height": h,
                "threads": cfg.threads,
                "lookahead_ms": cfg.quality_lookahead_ms,
                "warmup_frames": cfg.warmup,
                "frames": rep.frames - cfg.warmup,
                "faces": rep.faces,
                "no_face": rep.no_face,
                "silent": rep.silent,
                "stages_ms": {k: percentiles(v) for k, v in measured.items()},
                "total_ms": percentiles(total) if total is not None else None,
                "total_note": (
                    "sum of the stages per frame"
                    if total is not None
                    else "not summed: frames without a face skip stages, so the per-stage lists differ"
                ),
                "wall_s": rep.wall,
                "frames_per_s": rep.frames_per_second,
                "x_realtime": rep.realtime_factor,
                "audio_s": rep.duration,
                "source": "rtdub.measure.bench.sections.stage_latency -> "
                f"rtdub.dub.dub_file(backend={name}) on a generated {w}x{h} H.264 clip "
                "(astronaut portrait, head motion, espeak speech); "
                "a2l is skipped (about 0 ms) on frames the pipeline finds silent",
            }
            runs.append(run)
            ctx.latency_runs.append(run)
    return {
        "status": "ok" if runs else "skipped",
        "reason": None if runs else "no backend available",
        "runs": runs,
        "skipped_backends": skipped,
        "stages": list(BENCH_STAGES),
        "source": "rtdub.measure.bench.sections.stage_latency",
    }


def throughput(ctx: Context) -> dict[str, Any]:
    """Frames/s and multiple of real time of ``rtdub dub``."""
    cfg = ctx.cfg
    runs: list[dict[str, Any]] = []
    for r in ctx.latency_runs:
        runs.append(
            {
                "clip": f"generated {r['width']}x{r['height']}",
                "audio": "espeak speech",
                "backend": r["backend"],
                "frames": r["frames"] + r["warmup_frames"],
                "wall_s": r["wall_s"],
                "frames_per_s": r["frames_per_s"],
                "x_realtime": r["x_realtime"],
                "source": f"rtdub.dub.dub_file, the stage_latency run {r['key']} (wall time includes warm-up)",
            }
        )
    notes: list[str] = []
    if not ctx.latency_runs:
        notes.append("no stage_latency runs in this bench (section not selected)")
    clips = find_clips(cfg.clips)
    speech = cfg.dub_audio
    if not cfg.shared_throughput:
        notes.append("shared-clip run skipped (--quick or disabled)")
    elif not clips:
        notes.append(f"shared-clip run skipped: {no_clips_reason(cfg.clips)}")
    elif speech is None:
        notes.append(
            f"shared-clip run skipped: no dubbing audio: set {MEDIA_ENV} (audio/french.wav under it) "
            "or pass --dub-audio"
        )
    elif not speech.is_file():
        notes.append(f"shared-clip run skipped: {speech} is absent")
    else:
        from ...dub import DubOptions, dub_file

        backends, _ = ctx.backends()
        for name in backends:
            ctx.progress(f"throughput: {clips[0].name} with {speech.name} ({name})")
            out = ctx.workdir / f"throughput_{name}.mp4"
            rep = dub_file(DubOptions(video=clips[0], audio=speech, output=out, engine=dub_engine(cfg, name)))
            out.unlink(missing_ok=True)
            runs.append(
                {
                    "clip": clips[0].name,
                    "audio": speech.name,
                    "backend": name,
                    "frames": rep.frames,
                    "wall_s": rep.wall,
                    "frames_per_s": rep.frames_per_second,
                    "x_realtime": rep.realtime_factor,
                    "source": f"rtdub.dub.dub_file({clips[0].name}, {speech.name}, backend={name}), "
                    "i.e. `rtdub dub` (video ping-pong looped to the audio's length)",
                }
            )
    return {
        "status": "ok" if runs else "skipped",
        "runs": runs,
        "notes": notes,
        "definition": "frames_per_s = output frames / wall time; x_realtime = audio duration / wall time",
        "source": "rtdub.measure.bench.sections.throughput",
    }


def streaming_command(seconds: float, out: Path) -> list[str]:
    """The command of the streaming engine's loopback measurement. Its contract:
    ``--seconds S --out FILE`` writes one JSON object with glass-to-glass percentiles of the
    dubbed and the passthrough path measured in the same run (frame indices stamped in pixels),
    the added latency, fps, late and dropped frames."""
    return [sys.executable, "-m", STREAMING_MODULE, "--seconds", f"{seconds:g}", "--out", str(out)]


def streaming(ctx: Context) -> dict[str, Any]:
    """Glass-to-glass latency over loopback WebRTC, from the streaming engine's own measurement
    (run in a child process, so its event loop, threads and memory are its own)."""
    import resource

    cfg = ctx.cfg
    out = ctx.workdir / "loopback.json"
    cmd = streaming_command(cfg.streaming_seconds, out)
    ctx.progress(f"streaming: {' '.join(cmd[1:4])} for {cfg.streaming_seconds:g} s")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=cfg.streaming_seconds * 4 + 120,
            check=False,
            env={**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")},
        )
    except subprocess.TimeoutExpired:
        source = "rtdub.measure.bench.sections.streaming"
        return {"status": "error", "error": f"{' '.join(cmd[1:3])} timed out", "source": source}
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0 or not out.is_file():
        tail = " | ".join((res.stderr or "").strip().splitlines()[-3:])
        return {
            "status": "error",
            "error": f"{' '.join(cmd[1:3])} exited with {res.returncode}: {tail}",
            "source": "rtdub.measure.bench.sections.streaming",
        }
    result = json.loads(out.read_text())
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "status": "ok",
        "result": result,
        "process": {
            "wall_s": wall,
            "cpu_s": cpu_s,
            "cpu_cores_used": cpu_s / wall if wall > 0 else None,
            "note": "CPU of the loopbench processes: the client (pre-encoded sender, both decoders) and the "
            "engine (both sessions); wall includes start-up, pre-encoding and model loading; the engine's "
            "own share is result.cpu_cores",
        },
        "source": "rtdub.measure.bench.sections.streaming -> "
        f"python -m {STREAMING_MODULE} --seconds {cfg.streaming_seconds:g} "
        "(the streaming engine's own loopback measurement)",
    }
