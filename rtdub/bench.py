"""``rtdub bench``: latency, throughput, lookahead trade-off and quality, with plots.

    rtdub bench [--quick] [--out DIR] [--sections stage_latency,throughput,...]

Sections (each figure in the JSON names the function and the code path it comes from):

    stage_latency  per-stage ms (decode, track, align, mel, a2l, generator, blend, encode),
                   p50/p95/p99 over ``frames`` frames after ``warmup``, per backend and frame
                   size, from :func:`rtdub.dub.dub_file` (the code of ``rtdub dub``) on a
                   generated talking-head clip (H.264 in, H.264 out through media.VideoWriter)
    throughput     frames/s and multiple of real time of those runs, and (full mode) of a
                   shared clip dubbed with foreign speech
    lookahead      for each lookahead: mouth-opening correlation on the clips
                   (:func:`rtdub.evaluation.reconstruct`), the TTS lip-closure AUC on the
                   generated face (:func:`rtdub.evaluation.lip_closure`), the measured compute
                   and the latency the lookahead adds when the audio arrives just in time
    quality        model vs true-units vs frozen mouth on a folder of clips (DESIGN §5)
    streaming      glass-to-glass over loopback WebRTC (reported as not available until the
                   streaming engine exposes a measurement hook)

LSE-C/LSE-D need the project's lip-sync expert (issue 3), which does not exist yet: they are
reported as ``null`` with the reason, never estimated.

Outputs in ``--out``: ``bench.json`` (machine, config, every figure), ``bench_samples.json``
(the per-frame samples behind the percentiles), ``bench.md`` (tables) and PNG plots. Generated
clips and dubbed outputs live in a temporary directory and are deleted; no media is written to
``--out``. Heavy imports (mediapipe, onnxruntime, matplotlib) happen inside the sections.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SCHEMA = "rtdub-bench/1"
SECTIONS = ("stage_latency", "throughput", "lookahead", "quality", "streaming")
BENCH_STAGES = ("decode", "track", "align", "mel", "a2l", "generator", "blend", "encode")
ALL_BACKENDS = ("onnx", "tensorrt")
PACKAGES = (
    "numpy", "onnxruntime", "mediapipe", "av", "aiortc", "opencv-python-headless",
    "scikit-image", "matplotlib", "tensorrt", "pycuda",
)  # fmt: skip
LSE_REASON = (
    "needs the project's lip-sync expert (issue 3: AVSyncNet), which is not built yet; "
    "no number is reported rather than an estimate"
)
STREAMING_REASON = "streaming engine not built (no loopback measurement hook in rtdub.streaming)"
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".webm", ".avi")
FPS = 25.0
FACE_HEIGHT = 0.36  # forehead-to-chin share of the frame height in the generated clips, as in a video call
# a paragraph with few pauses, so nearly every frame runs the audio-to-lip stage
LATENCY_TEXT = (
    "We measure every stage of the dubbing engine on every frame, while the speaker keeps talking "
    "about the weather, the trains, the budget and the plans for the coming summer holidays"
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    out: Path = Path("benchmarks/results")
    quick: bool = False
    frames: int = 500  # measured frames per latency run, after warm-up
    warmup: int = 25
    resolutions: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720))
    backends: tuple[str, ...] = ALL_BACKENDS
    threads: int = 2
    model: Path | None = None
    clips: Path = Path("../shared/media/clips")
    clip_frames: int | None = None  # cap per clip for lookahead/quality (None: whole clip)
    dub_audio: Path = Path("../shared/media/audio/french.wav")
    shared_throughput: bool = True  # also dub the first clip with ``dub_audio``
    lookaheads_ms: tuple[float, ...] = (0.0, 40.0, 80.0, 120.0)
    quality_lookahead_ms: float = 100.0  # the default of ``rtdub dub``
    closure_text: str | None = None  # TTS sentence of the lip-closure test; None: the protocol's
    streaming_seconds: float = 30.0  # length of the loopback streaming run
    sections: tuple[str, ...] = SECTIONS
    notes: tuple[str, ...] = ()

    @staticmethod
    def quick_mode(**overrides: Any) -> BenchConfig:
        """The ``--quick`` configuration: about 3 minutes on 2 cores."""
        base: dict[str, Any] = {
            "quick": True,
            "frames": 200,
            "warmup": 20,
            "resolutions": ((640, 480),),
            "clip_frames": 75,
            "shared_throughput": False,
            "streaming_seconds": 12.0,
        }
        base.update(overrides)
        res = ", ".join(f"{w}x{h}" for w, h in base.get("resolutions", ()))
        note = (
            f"--quick: {base['frames']} measured frames per latency run (full: 500), {res or 'no resolution'} "
            f"only, the first {base['clip_frames']} frames of each clip for lookahead and quality, no "
            f"shared-clip throughput run, a {base['streaming_seconds']:g} s streaming run (full: 30 s)"
        )
        base["notes"] = (note, *base.get("notes", ()))
        return BenchConfig(**base)


# ---------------------------------------------------------------------------------------------
# statistics and machine


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = (float(v) for v in np.percentile(x, [50, 95, 99]))
    return {"n": int(x.size), "mean": float(x.mean()), "p50": p50, "p95": p95, "p99": p99, "max": float(x.max())}


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
    root = Path(__file__).resolve().parent.parent
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


def machine_info() -> dict[str, Any]:
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
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
    }


def model_info(model: Path | None) -> dict[str, Any]:
    import hashlib

    from .model import load_bundle

    b = load_bundle(model)
    files = {}
    for p in (b.a2l_path, b.generator_path, b.root / "manifest.json"):
        files[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return {"root": str(b.root), "name": b.info.get("name"), "crop_size": b.crop_size, "sha256_16": files}


# ---------------------------------------------------------------------------------------------
# generated media


def talking_head_frames(width: int, height: int, n: int, fps: float = FPS, seed: int = 0) -> Iterator[np.ndarray]:
    """The astronaut portrait fitted to the frame height, centred, with the sides filled by a
    blurred continuation of its edges, under gentle head motion: a webcam-like frame whose face
    is about a third of the frame height."""
    import cv2

    from . import samples

    img = samples.portrait()
    # the face (forehead to chin) spans about 21% of the 512x512 portrait; scale it to FACE_HEIGHT
    side = int(round(min(height, width) * FACE_HEIGHT / 0.21))
    fg = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if side < img.shape[0] else cv2.INTER_LINEAR)
    s = side / img.shape[0]
    fx, fy = 230.0 * s, 130.0 * s  # the face centre in skimage's 512x512 astronaut
    # place the face centre at half the width and 42% of the height; fill what the portrait
    # does not cover with a blurred continuation of its edges
    x0 = int(round(fx - width / 2))
    y0 = int(round(fy - 0.42 * height))
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x0 + width - side), max(0, y0 + height - side)
    big = cv2.copyMakeBorder(fg, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    if pad_l or pad_r or pad_t or pad_b:
        blur = cv2.GaussianBlur(big, (0, 0), sigmaX=max(2.0, width / 60))
        keep = np.zeros(big.shape[:2], bool)
        keep[pad_t : pad_t + side, pad_l : pad_l + side] = True
        big[~keep] = blur[~keep]
    x0 += pad_l
    y0 += pad_t
    frame = np.ascontiguousarray(big[y0 : y0 + height, x0 : x0 + width])
    centre = (fx + pad_l - x0, fy + pad_t - y0)
    yield from samples.head_motion(frame, n, fps, seed=seed, centre=centre)


def speech_track(seconds: float, text: str = LATENCY_TEXT) -> np.ndarray:
    """TTS speech (16 kHz) repeated with short pauses to exactly ``seconds``."""
    from . import audio, tts

    sr = audio.SAMPLE_RATE
    sp = tts.synthesize(text, voice="en-us", rate=170).resampled(sr).samples
    unit = np.concatenate([sp, np.zeros(int(0.15 * sr), np.float32)])
    n = int(round(seconds * sr))
    reps = max(1, math.ceil(n / unit.size))
    return np.tile(unit, reps)[:n].astype(np.float32)


def write_talking_clip(path: Path, width: int, height: int, n_frames: int, fps: float = FPS) -> Path:
    from . import samples

    return samples.write_clip(path, talking_head_frames(width, height, n_frames, fps), fps)


# ---------------------------------------------------------------------------------------------
# sections


@dataclass
class Context:
    """State shared by the sections of one run."""

    cfg: BenchConfig
    workdir: Path
    progress: Progress
    samples: dict[str, Any] = field(default_factory=dict)  # per-frame data for bench_samples.json
    clip_results: dict[str, Any] = field(default_factory=dict)  # reconstruction cache
    latency_runs: list[dict[str, Any]] = field(default_factory=list)
    _clips_done: bool = False
    _backends: tuple[list[str], list[dict[str, str]]] | None = None

    def backends(self) -> tuple[list[str], list[dict[str, str]]]:
        """The configured backends that load here, and why the others do not (probed once)."""
        if self._backends is None:
            self._backends = available_backends(self.cfg)
        return self._backends

    def first_backend(self) -> str:
        ok, skipped = self.backends()
        if not ok:
            raise RuntimeError(f"no backend available: {skipped}")
        return ok[0]


def available_backends(cfg: BenchConfig) -> tuple[list[str], list[dict[str, str]]]:
    """The backends of ``cfg`` that load here, and a note for each one that does not."""
    from .backends import BackendConfig, get_backend
    from .model import load_bundle

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


def stage_latency(ctx: Context) -> dict[str, Any]:
    """Per-stage ms of ``rtdub dub`` (rtdub.dub.dub_file) on generated clips."""
    from .dub import DubOptions, dub_file
    from .media import write_wav

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
            rep = dub_file(
                DubOptions(
                    video=clip, audio=wav, output=out, model=cfg.model, backend=name,
                    lookahead_ms=cfg.quality_lookahead_ms, threads=cfg.threads,
                )
            )  # fmt: skip
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
                "source": f"rtdub.bench.stage_latency -> rtdub.dub.dub_file(backend={name}) on a generated "
                f"{w}x{h} H.264 clip (astronaut portrait, head motion, espeak speech); "
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
        "source": "rtdub.bench.stage_latency",
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
    if not cfg.shared_throughput:
        notes.append("shared-clip run skipped (--quick or disabled)")
    elif not clips:
        notes.append(f"shared-clip run skipped: no clips with audio in {cfg.clips}")
    elif not cfg.dub_audio.is_file():
        notes.append(f"shared-clip run skipped: {cfg.dub_audio} is absent")
    else:
        from .dub import DubOptions, dub_file

        backends, _ = ctx.backends()
        for name in backends:
            ctx.progress(f"throughput: {clips[0].name} with {cfg.dub_audio.name} ({name})")
            out = ctx.workdir / f"throughput_{name}.mp4"
            rep = dub_file(
                DubOptions(
                    video=clips[0], audio=cfg.dub_audio, output=out, model=cfg.model, backend=name,
                    lookahead_ms=cfg.quality_lookahead_ms, threads=cfg.threads,
                )
            )  # fmt: skip
            out.unlink(missing_ok=True)
            runs.append(
                {
                    "clip": clips[0].name,
                    "audio": cfg.dub_audio.name,
                    "backend": name,
                    "frames": rep.frames,
                    "wall_s": rep.wall,
                    "frames_per_s": rep.frames_per_second,
                    "x_realtime": rep.realtime_factor,
                    "source": f"rtdub.dub.dub_file({clips[0].name}, {cfg.dub_audio.name}, backend={name}), "
                    "i.e. `rtdub dub` (video ping-pong looped to the audio's length)",
                }
            )
    return {
        "status": "ok" if runs else "skipped",
        "runs": runs,
        "notes": notes,
        "definition": "frames_per_s = output frames / wall time; x_realtime = audio duration / wall time",
        "source": "rtdub.bench.throughput",
    }


def find_clips(folder: Path) -> list[Path]:
    """Video files in ``folder`` that have an audio stream, sorted by name."""
    if not folder.is_dir():
        return []
    import av

    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in VIDEO_EXTS or not p.is_file():
            continue
        try:
            with av.open(str(p)) as c:
                if c.streams.audio and c.streams.video:
                    out.append(p)
        except (av.error.FFmpegError, OSError):
            continue
    return out


def _clip_renders(ctx: Context) -> dict[str, Any]:
    """Reconstruction of every clip in the modes and lookaheads the selected sections need,
    each clip decoded and tracked once. Cached on the context."""
    if ctx._clips_done:
        return ctx.clip_results
    ctx._clips_done = True
    t0 = time.perf_counter()
    from .backends import BackendConfig, get_backend
    from .evaluation import load_clip, reconstruct
    from .model import load_bundle

    cfg = ctx.cfg
    clips = find_clips(cfg.clips)
    ctx.clip_results = {"clips": [c.name for c in clips], "renders": {}}
    if not clips:
        return ctx.clip_results
    jobs: list[tuple[str, float]] = []
    if "quality" in cfg.sections:
        jobs += [(m, cfg.quality_lookahead_ms) for m in ("model", "true-units", "frozen")]
    if "lookahead" in cfg.sections:
        jobs += [("model", la) for la in cfg.lookaheads_ms if ("model", la) not in jobs]
    bundle = load_bundle(cfg.model)
    name = ctx.first_backend()
    backend = get_backend(name, bundle, BackendConfig(threads=cfg.threads))
    ctx.clip_results["backend"] = name
    renders: dict[str, dict[str, Any]] = ctx.clip_results["renders"]
    try:
        for path in clips:
            ctx.progress(f"clips: decoding and tracking {path.name}")
            data = load_clip(path, bundle, cfg.clip_frames)
            for mode, la in jobs:
                ctx.progress(f"clips: {path.name} {mode} lookahead {la:g} ms")
                r = reconstruct(data, mode, bundle, backend, la)
                renders.setdefault(f"{mode}@{la:g}", {})[path.name] = {
                    "scores": r.scores,
                    "frame_ms": r.frame_ms.tolist(),
                    "size": list(data.size),
                    "fps": data.fps,
                }
            del data
    finally:
        backend.close()
    ctx.clip_results["wall_s"] = time.perf_counter() - t0
    ctx.clip_results["wall_note"] = (
        "the clip renders of lookahead and quality run once, in whichever section comes first"
    )
    return ctx.clip_results


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _lse() -> dict[str, Any]:
    return {"LSE_C": None, "LSE_D": None, "LSE_reason": LSE_REASON}


def lookahead(ctx: Context) -> dict[str, Any]:
    """Sync against latency for each lookahead."""
    from . import audio
    from .backends import BackendConfig, get_backend
    from .evaluation import lip_closure, tts_speech
    from .model import load_bundle

    cfg = ctx.cfg
    clips = _clip_renders(ctx)
    bundle = load_bundle(cfg.model)
    backend_name = ctx.first_backend()
    backend = get_backend(backend_name, bundle, BackendConfig(threads=cfg.threads))
    w, h = cfg.resolutions[0] if cfg.resolutions else (640, 480)
    speech = tts_speech(cfg.closure_text) if cfg.closure_text else tts_speech()
    n = math.ceil(speech.duration * FPS - 1e-9)
    closure: dict[str, Any] = {}
    try:
        ctx.progress("lookahead: lip closure, frozen-mouth baseline")
        frozen = lip_closure(talking_head_frames(w, h, n), speech, FPS, bundle, backend, 0.0, frozen=True)
        for la in cfg.lookaheads_ms:
            ctx.progress(f"lookahead: lip closure at {la:g} ms")
            closure[f"{la:g}"] = lip_closure(talking_head_frames(w, h, n), speech, FPS, bundle, backend, la)
    finally:
        backend.close()
    half_window_ms = audio.N_FFT / 2 / audio.SAMPLE_RATE * 1000
    rows: list[dict[str, Any]] = []
    renders = clips.get("renders", {})
    for la in cfg.lookaheads_ms:
        c = closure[f"{la:g}"]
        per_clip = renders.get(f"model@{la:g}", {})
        compute = list(c.frame_ms) + [v for r in per_clip.values() for v in r["frame_ms"]]
        ctx.samples[f"lookahead/{la:g}/frame_ms"] = compute
        cp = percentiles(compute)
        p50 = cp["p50"] if cp["p50"] is not None else 0.0
        assert isinstance(p50, float)
        wait = la + half_window_ms
        rows.append(
            {
                "lookahead_ms": la,
                "MOC": _mean([r["scores"]["MOC"] for r in per_clip.values()]),
                "LMD": _mean([r["scores"]["LMD"] for r in per_clip.values()]),
                "MOC_per_clip": {k: _finite(r["scores"]["MOC"]) for k, r in per_clip.items()},
                "lip_closure_auc": _finite(c.auc),
                **_lse(),
                "audio_wait_ms": wait,
                "compute_ms": cp,
                "added_latency_audio_just_in_time_ms": wait + p50,
                "added_latency_audio_buffered_ms": p50,
            }
        )
    frozen_moc = _mean([r["scores"]["MOC"] for r in renders.get(f"frozen@{cfg.quality_lookahead_ms:g}", {}).values()])
    true_moc = _mean([r["scores"]["MOC"] for r in renders.get(f"true-units@{cfg.quality_lookahead_ms:g}", {}).values()])
    return {
        "status": "ok",
        "backend": backend_name,
        "rows": rows,
        "baselines": {
            "lip_closure_auc_frozen": _finite(frozen.auc),
            "MOC_frozen": frozen_moc,
            "MOC_true_units": true_moc,
        },
        "closure_frames": {"total": n, "open_vowel": frozen.frames_open, "bilabial": frozen.frames_bilabial},
        "clips": clips.get("clips", []),
        "clips_note": None if clips.get("clips") else f"MOC skipped: no clips with audio in {cfg.clips}",
        "clip_frames": cfg.clip_frames,
        "clip_renders_wall_s": clips.get("wall_s"),
        "clip_renders_note": clips.get("wall_note"),
        "definitions": {
            "MOC": "mean over clips of the Pearson correlation of the inner-lip gap, output vs input "
            "(reconstruction: each clip dubbed with its own audio)",
            "lip_closure_auc": f"P(inner gap on an open-vowel frame > on a /p b m/ frame), TTS sentence dubbed "
            f"onto the generated {w}x{h} face; 0.5 = no signal",
            "audio_wait_ms": "lookahead + half the STFT window (AudioStage.needed_until): how long a frame "
            "waits for its audio when the dubbed audio arrives just in time",
            "compute_ms": "measured pipeline compute per frame (track+align+mel+a2l+generator+blend) in the "
            "renders at this lookahead; decode and encode excluded",
            "added_latency_audio_just_in_time_ms": "audio_wait_ms + compute p50 (derived, not a "
            "glass-to-glass measurement)",
            "added_latency_audio_buffered_ms": "compute p50: the dubbed audio is already buffered ahead "
            "(e.g. TTS chunks), so the lookahead costs nothing (DESIGN §3)",
        },
        "source": "rtdub.bench.lookahead -> rtdub.evaluation.reconstruct (MOC, LMD) and "
        "rtdub.evaluation.lip_closure (AUC, compute)",
    }


def quality(ctx: Context) -> dict[str, Any]:
    """Model vs true-units vs frozen mouth on a folder of clips (DESIGN §5)."""
    cfg = ctx.cfg
    clips = _clip_renders(ctx)
    if not clips.get("clips"):
        return {
            "status": "skipped",
            "reason": f"no clips with audio in {cfg.clips} (folder absent or empty)",
            "source": "rtdub.bench.quality",
        }
    la = f"{cfg.quality_lookahead_ms:g}"
    per_clip: dict[str, dict[str, Any]] = {}
    mean: dict[str, dict[str, Any]] = {}
    from .evaluation import SCORES

    for mode in ("model", "true-units", "frozen"):
        rs = clips["renders"].get(f"{mode}@{la}", {})
        for name, r in rs.items():
            per_clip.setdefault(name, {})[mode] = {
                **{k: _finite(r["scores"][k]) for k in SCORES},
                "frames_scored": r["scores"]["frames"],
                "frames": r["scores"]["tracked_out_of"],
                **_lse(),
            }
        mean[mode] = {k: _mean([r["scores"][k] for r in rs.values()]) for k in SCORES} | _lse()
    return {
        "status": "ok",
        "backend": clips.get("backend"),
        "lookahead_ms": cfg.quality_lookahead_ms,
        "clips": clips["clips"],
        "clip_frames": cfg.clip_frames,
        "clip_renders_wall_s": clips.get("wall_s"),
        "clip_renders_note": clips.get("wall_note"),
        "per_clip": per_clip,
        "mean": mean,
        "definitions": {
            "LMD": "lip landmark distance, % of inter-ocular distance (lower is better)",
            "MOC": "mouth-opening correlation with the input",
            "PSNR/SSIM": "lower face of the aligned crop",
            "sharpness": "Laplacian variance of the mouth box, output over input",
            "modes": "model: audio-driven; true-units: the clip's own lip units (ceiling of the audio "
            "stage); frozen: the identity reference pasted back (baseline)",
        },
        "source": "rtdub.bench.quality -> rtdub.evaluation.reconstruct (same protocol as training/evaluate.py)",
    }


STREAMING_MODULE = "rtdub.loopbench"


def streaming_command(seconds: float, out: Path) -> list[str] | None:
    """The command of the streaming engine's loopback measurement, or None when the engine
    does not provide one (yet). Its contract: ``--seconds S --out FILE`` writes one JSON object
    with glass-to-glass percentiles of the dubbed and the passthrough path measured in the same
    run (frame indices stamped in pixels), the added latency, fps, late and dropped frames."""
    import importlib.util

    try:
        found = importlib.util.find_spec(STREAMING_MODULE) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return None
    return [sys.executable, "-m", STREAMING_MODULE, "--seconds", f"{seconds:g}", "--out", str(out)]


def streaming(ctx: Context) -> dict[str, Any]:
    """Glass-to-glass latency over loopback WebRTC, from the streaming engine's own measurement
    (run in a child process, so its event loop, threads and memory are its own)."""
    import resource

    cfg = ctx.cfg
    out = ctx.workdir / "loopback.json"
    cmd = streaming_command(cfg.streaming_seconds, out)
    if cmd is None:
        return {"status": "not available", "reason": STREAMING_REASON, "source": "rtdub.bench.streaming"}
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
        return {"status": "error", "error": f"{' '.join(cmd[1:3])} timed out", "source": "rtdub.bench.streaming"}
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0 or not out.is_file():
        tail = " | ".join((res.stderr or "").strip().splitlines()[-3:])
        return {
            "status": "error",
            "error": f"{' '.join(cmd[1:3])} exited with {res.returncode}: {tail}",
            "source": "rtdub.bench.streaming",
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
            "note": "CPU of the whole child process: engine, both sessions, and the loopback client's "
            "encoder and decoder; wall includes start-up and model loading",
        },
        "source": f"rtdub.bench.streaming -> python -m {STREAMING_MODULE} --seconds {cfg.streaming_seconds:g} "
        "(the streaming engine's own loopback measurement)",
    }


SECTION_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "stage_latency": stage_latency,
    "throughput": throughput,
    "lookahead": lookahead,
    "quality": quality,
    "streaming": streaming,
}


# ---------------------------------------------------------------------------------------------
# outputs


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def markdown(report: dict[str, Any]) -> str:
    """The tables of a report (also usable on a loaded bench.json)."""
    m = report["machine"]
    sec = report["sections"]
    lines = [
        "# rtdub bench",
        "",
        f"- machine: {m['cpu_model']}, {m['cores_usable']} usable cores, {_f(m['memory_gb'])} GB; "
        f"load average at start {m['load_average_1_5_15']}",
        f"- commit `{_f(m['git_commit'])}`{' (dirty)' if m.get('git_dirty') else ''}; model "
        f"`{report.get('model', {}).get('name')}`; onnxruntime {m['packages'].get('onnxruntime')}, "
        f"mediapipe {m['packages'].get('mediapipe')}, av {m['packages'].get('av')}",
        f"- command: `{report['command']}`; mode: {'quick' if report['config']['quick'] else 'full'}; "
        f"wall time {_f(report.get('wall_s'), 1)} s; {report['created']}",
    ]
    lines += [f"- note: {n}" for n in report.get("notes", [])]
    sl = sec.get("stage_latency")
    if sl and sl.get("runs"):
        runs = sl["runs"]
        lines += ["", "## Per-stage latency (ms, p50 / p95 / p99)", "", f"Source: {runs[0]['source']}.", ""]
        head = "| stage | " + " | ".join(f"{r['backend']} {r['width']}x{r['height']}" for r in runs) + " |"
        lines += [head, "|---|" + "---|" * len(runs)]
        for st in [*sl["stages"], "total"]:
            cells = []
            for r in runs:
                p = r["total_ms"] if st == "total" else r["stages_ms"].get(st)
                cells.append("—" if not p or p["n"] == 0 else f"{p['p50']:.2f} / {p['p95']:.2f} / {p['p99']:.2f}")
            lines.append(f"| {'**total**' if st == 'total' else st} | " + " | ".join(cells) + " |")
        lines.append("| measured frames | " + " | ".join(str(r["frames"]) for r in runs) + " |")
        lines.append(
            "| all frames: face / no face / silent | "
            + " | ".join(f"{r['faces']} / {r['no_face']} / {r['silent']}" for r in runs)
            + " |"
        )
    if sl:
        skipped = sl.get("skipped_backends", [])
        lines += [""] + [f"- backend skipped: {s['backend']}: {s['reason']}" for s in skipped] if skipped else []
    tp = sec.get("throughput")
    if tp:
        lines += ["", "## Offline throughput (`rtdub dub`)", ""]
        if tp.get("runs"):
            lines += [
                "| clip | audio | backend | frames | wall s | frames/s | x real time |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in tp["runs"]:
                lines.append(
                    f"| {r['clip']} | {r['audio']} | {r['backend']} | {r['frames']} | {_f(r['wall_s'])} | "
                    f"{_f(r['frames_per_s'], 1)} | {_f(r['x_realtime'])} |"
                )
        lines += [""] + [f"- {n}" for n in tp["notes"]] if tp.get("notes") else []
    la = sec.get("lookahead")
    if la and la.get("status") == "ok":
        lines += [
            "",
            "## Lookahead trade-off",
            "",
            "| lookahead ms | MOC ↑ | LMD ↓ | lip-closure AUC ↑ | LSE-C | audio wait ms | compute p50 / p95 ms "
            "| added latency, audio just in time | added latency, audio buffered |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in la["rows"]:
            c = r["compute_ms"]
            lines.append(
                f"| {r['lookahead_ms']:g} | {_f(r['MOC'], 3)} | {_f(r['LMD'])} | {_f(r['lip_closure_auc'], 3)} | "
                f"null¹ | {_f(r['audio_wait_ms'], 1)} | {_f(c['p50'])} / {_f(c['p95'])} | "
                f"{_f(r['added_latency_audio_just_in_time_ms'], 1)} | {_f(r['added_latency_audio_buffered_ms'], 1)} |"
            )
        b = la["baselines"]
        lines += [
            "",
            f"- baselines: frozen mouth MOC {_f(b['MOC_frozen'], 3)}, true units MOC {_f(b['MOC_true_units'], 3)}, "
            f"frozen-mouth lip-closure AUC {_f(b['lip_closure_auc_frozen'], 3)}.",
            "- latency columns are derived (audio wait + measured compute p50), not glass-to-glass",
            f"- source: {la['source']}",
            f"- ¹ LSE-C: {LSE_REASON}",
        ]
        if la.get("clips_note"):
            lines.append(f"- {la['clips_note']}")
    elif la:
        lines += ["", "## Lookahead trade-off", "", f"{la.get('status')}: {la.get('reason') or la.get('error')}"]
    q = sec.get("quality")
    if q:
        lines += ["", "## Quality (reconstruction, DESIGN §5)", ""]
        if q.get("status") == "ok":
            lines += [
                f"Lookahead {q['lookahead_ms']:g} ms, backend {q['backend']}, clips {', '.join(q['clips'])}"
                + (f" (first {q['clip_frames']} frames each)" if q.get("clip_frames") else "")
                + f". Source: {q['source']}.",
                "",
                "| clip | mode | LMD ↓ | MOC ↑ | PSNR ↑ | SSIM ↑ | sharpness | LSE-C | LSE-D |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            rows = [(c, mode, r) for c, modes in q["per_clip"].items() for mode, r in modes.items()]
            rows += [("**mean**", mode, r) for mode, r in q["mean"].items()]
            for c, mode, r in rows:
                lines.append(
                    f"| {c} | {mode} | {_f(r['LMD'])} | {_f(r['MOC'], 3)} | {_f(r['PSNR'])} | {_f(r['SSIM'], 3)} | "
                    f"{_f(r['sharpness'], 3)} | null¹ | null¹ |"
                )
            lines += ["", f"¹ {LSE_REASON}."]
        else:
            lines.append(f"{q.get('status')}: {q.get('reason') or q.get('error')}")
    st = sec.get("streaming")
    if st:
        lines += ["", "## Streaming (glass-to-glass, loopback WebRTC)", ""]
        if st.get("status") == "ok":
            lines += _streaming_md(st)
        else:
            lines.append(f"{st.get('status')}: {st.get('reason') or st.get('error')}")
    errors = [k for k, v in sec.items() if v.get("status") == "error"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {k}: {sec[k].get('error')}" for k in errors]
    return "\n".join(lines) + "\n"


def _streaming_md(st: dict[str, Any]) -> list[str]:
    r = st.get("result", {})
    lines = [f"Source: {st['source']}.", ""]
    g2g = r.get("glass_to_glass_ms") or {}
    rows = [(f"glass-to-glass, {k}", v) for k, v in g2g.items()]
    if r.get("added_latency_ms"):
        rows.append(("added latency (dubbed - passthrough, per frame)", r["added_latency_ms"]))
    if rows:
        lines += ["| ms | p50 | p95 | p99 | frames |", "|---|---|---|---|---|"]
        for name, p in rows:
            lines.append(
                f"| {name} | {_f(p.get('p50'), 1)} | {_f(p.get('p95'), 1)} | {_f(p.get('p99'), 1)} | {_f(p.get('n'))} |"
            )
    shown = ("glass_to_glass_ms", "added_latency_ms")
    facts = [f"{k}: {json.dumps(v)}" for k, v in r.items() if k not in shown]
    proc = st.get("process") or {}
    if proc.get("cpu_cores_used") is not None:
        facts.append(f"CPU: {proc['cpu_cores_used']:.2f} cores on average over {proc['wall_s']:.1f} s ({proc['note']})")
    lines += [""] + [f"- {f}" for f in facts]
    return lines


def plots(report: dict[str, Any], samples: dict[str, Any], out: Path) -> list[Path]:
    """Latency histograms, per-stage bars and the lookahead curve as PNGs in ``out``."""
    from matplotlib.figure import Figure  # Agg canvas on savefig; no pyplot global state

    written: list[Path] = []
    sl = report["sections"].get("stage_latency") or {}
    runs = sl.get("runs") or []
    for r in runs:
        data = samples.get(f"stage_latency/{r['key']}", {})
        series: list[tuple[str, list[float]]] = [(k, v) for k, v in data.get("stages_ms", {}).items()]
        if data.get("total_ms"):
            series.append(("total", data["total_ms"]))
        if not series:
            continue
        cols = 3
        rows = math.ceil(len(series) / cols)
        fig = Figure(figsize=(11, 2.6 * rows), layout="constrained")
        for i, (name, vals) in enumerate(series):
            ax = fig.add_subplot(rows, cols, i + 1)
            v = np.asarray(vals, np.float64)
            if v.size:
                ax.hist(v, bins=40, color="tab:blue", alpha=0.8)
                for q, ls in ((50, "-"), (95, "--"), (99, ":")):
                    ax.axvline(float(np.percentile(v, q)), color="k", linestyle=ls, linewidth=1, label=f"p{q}")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("ms", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.legend(fontsize=7)
        fig.suptitle(f"per-frame latency, {r['backend']} {r['width']}x{r['height']} ({r['frames']} frames)")
        p = out / f"latency_hist_{r['key']}.png"
        fig.savefig(p, dpi=90)
        written.append(p)
    if runs:
        stages = list(sl["stages"])
        fig = Figure(figsize=(10, 4.2), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / len(runs)
        x = np.arange(len(stages))
        for j, r in enumerate(runs):
            p50 = np.array([r["stages_ms"][s]["p50"] or 0.0 for s in stages])
            p95 = np.array([r["stages_ms"][s]["p95"] or 0.0 for s in stages])
            p99 = np.array([r["stages_ms"][s]["p99"] or 0.0 for s in stages])
            xs = x - 0.4 + width * (j + 0.5)
            ax.bar(xs, np.maximum(p50, 1e-3), width, label=f"{r['backend']} {r['width']}x{r['height']} p50")
            ax.errorbar(xs, p50, yerr=[np.zeros_like(p50), p95 - p50], fmt="none", ecolor="k", capsize=2)
            ax.plot(xs, np.maximum(p99, 1e-3), "k_", markersize=8)
        ax.set_xticks(x, stages)
        ax.set_yscale("log")
        ax.set_ylabel("ms per frame (bar p50, whisker p95, dash p99)")
        ax.set_title("per-stage latency")
        ax.legend(fontsize=8)
        p = out / "stage_bars.png"
        fig.savefig(p, dpi=90)
        written.append(p)
    la = report["sections"].get("lookahead") or {}
    if la.get("status") == "ok" and la.get("rows"):
        rows_ = la["rows"]
        las = [r["lookahead_ms"] for r in rows_]
        fig = Figure(figsize=(10, 4), layout="constrained")
        a1 = fig.add_subplot(1, 2, 1)
        for key, label, colour in (
            ("MOC", "MOC (clips)", "tab:blue"),
            ("lip_closure_auc", "lip-closure AUC", "tab:green"),
        ):
            ys = [r[key] for r in rows_]
            if any(y is not None for y in ys):
                a1.plot(las, [np.nan if y is None else y for y in ys], "o-", color=colour, label=label)
        b = la["baselines"]
        for key, label, colour in (
            ("MOC_frozen", "MOC frozen mouth", "tab:blue"),
            ("lip_closure_auc_frozen", "AUC frozen mouth", "tab:green"),
        ):
            if b.get(key) is not None:
                a1.axhline(b[key], color=colour, linestyle="--", linewidth=1, label=label)
        a1.set_xlabel("lookahead (ms)")
        a1.set_ylabel("sync (higher is better)")
        a1.set_title("sync vs lookahead (LSE-C: n/a, no expert yet)", fontsize=9)
        a1.legend(fontsize=7)
        a2 = fig.add_subplot(1, 2, 2)
        a2.plot(las, [r["added_latency_audio_just_in_time_ms"] for r in rows_], "o-", label="added, audio just in time")
        a2.plot(las, [r["added_latency_audio_buffered_ms"] for r in rows_], "s-", label="added, audio buffered")
        a2.plot(las, [r["compute_ms"]["p95"] or 0.0 for r in rows_], "^:", label="compute p95")
        a2.set_xlabel("lookahead (ms)")
        a2.set_ylabel("ms")
        a2.set_title("latency vs lookahead (derived)", fontsize=9)
        a2.legend(fontsize=7)
        p = out / "lookahead.png"
        fig.savefig(p, dpi=90)
        written.append(p)
    return written


def _jsonable(x: Any) -> Any:
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
    report: dict[str, Any]
    json_path: Path
    samples_path: Path
    markdown_path: Path
    plots: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        return not any(s.get("status") == "error" for s in self.report["sections"].values())


def run_bench(cfg: BenchConfig, progress: Progress | None = None, command: str | None = None) -> BenchOutput:
    """Run the selected sections of ``cfg`` and write the outputs into ``cfg.out``.

    A section that fails is recorded with ``status: error`` and the others still run."""
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    say = progress or (lambda msg: logger.info(msg))
    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    notes = list(cfg.notes)
    load = machine.get("load_average_1_5_15")
    if load and load[0] > 0.5 * machine["cores_usable"]:
        notes.append(
            f"the machine was busy at the start (1-min load average {load[0]} on {machine['cores_usable']} "
            "cores): timings are inflated and not comparable"
        )
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or "rtdub.bench.run_bench",
        "machine": machine,
        "model": model_info(cfg.model),
        "config": _jsonable(dataclasses.asdict(cfg)),
        "notes": notes,
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="rtdub-bench-") as tmp:
        ctx = Context(cfg, Path(tmp), say)
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
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    report = _jsonable(report)
    json_path = cfg.out / "bench.json"
    samples_path = cfg.out / "bench_samples.json"
    md_path = cfg.out / "bench.md"
    samples = _jsonable(ctx.samples)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    samples_path.write_text(json.dumps(samples) + "\n")
    md_path.write_text(markdown(report))
    pngs = plots(report, samples, cfg.out)
    logger.info("bench written", extra={"out": str(cfg.out), "wall_s": report["wall_s"]})
    return BenchOutput(report, json_path, samples_path, md_path, tuple(pngs))


# ---------------------------------------------------------------------------------------------
# command line


def _resolution(s: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {s!r}") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"resolution too small: {s}")
    return w, h


def _csv(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="latency, throughput, lookahead and quality benchmarks with plots")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output directory")
    p.add_argument("--quick", action="store_true", help="a smaller run that finishes within 5 minutes on 2 cores")
    p.add_argument("--sections", type=_csv, default=None, help=f"comma list of {','.join(SECTIONS)}")
    p.add_argument("--frames", type=int, default=None, help="measured frames per latency run (default 500)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up frames per latency run (default 25)")
    p.add_argument(
        "--resolutions", type=lambda s: [_resolution(v) for v in _csv(s)], default=None,
        help="comma list of WIDTHxHEIGHT (default 640x480,1280x720)",
    )  # fmt: skip
    p.add_argument("--backends", type=_csv, default=None, help="comma list (default: onnx,tensorrt when present)")
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument("--model", type=Path, default=None, help="model bundle (default engines/default)")
    p.add_argument("--clips", type=Path, default=Path("../shared/media/clips"), help="folder of talking-head clips")
    p.add_argument("--clip-frames", type=int, default=None, help="use at most this many frames per clip")
    p.add_argument("--dub-audio", type=Path, default=Path("../shared/media/audio/french.wav"))
    p.add_argument(
        "--lookaheads", type=lambda s: [float(v) for v in _csv(s)], default=None,
        help="comma list of ms (default 0,40,80,120)",
    )  # fmt: skip
    p.set_defaults(func=cmd_bench)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    kw: dict[str, Any] = {
        "out": args.out,
        "threads": args.threads,
        "model": args.model,
        "clips": args.clips,
        "dub_audio": args.dub_audio,
    }
    optional = {
        "sections": args.sections,
        "frames": args.frames,
        "warmup": args.warmup,
        "resolutions": args.resolutions,
        "backends": args.backends,
        "clip_frames": args.clip_frames,
        "lookaheads_ms": args.lookaheads,
    }
    kw |= {k: tuple(v) if isinstance(v, list) else v for k, v in optional.items() if v is not None}
    return BenchConfig.quick_mode(**kw) if args.quick else BenchConfig(**kw)


def cmd_bench(args: argparse.Namespace) -> int:
    from .exceptions import InputError

    if args.sections is not None and (bad := set(args.sections) - set(SECTIONS)):
        raise InputError("--sections", f"unknown {sorted(bad)}; choose from {', '.join(SECTIONS)}")
    for name in ("frames", "warmup", "clip_frames"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            raise InputError(f"--{name.replace('_', '-')}", "out of range")
    cfg = config_from_args(args)
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    # the same options whether started as `rtdub bench` or as `python -m benchmarks.run`
    argv = sys.argv[sys.argv.index("bench") + 1 :] if "bench" in sys.argv else sys.argv[1:]
    out = run_bench(cfg, progress, " ".join(["rtdub", "bench", *(shlex.quote(a) for a in argv)]))
    print(out.markdown_path.read_text())
    print(f"wrote {out.json_path}, {out.samples_path}, {out.markdown_path}")
    for p in out.plots:
        print(f"wrote {p}")
    print(f"bench wall time: {out.report['wall_s']:.1f} s")
    return 0 if out.ok else 1
