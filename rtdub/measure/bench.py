"""``rtdub bench``: latency, throughput, lookahead trade-off and quality, with plots.

    rtdub bench [--quick] [--out DIR] [--expert DIR] [--sections stage_latency,throughput,...]

Sections (each figure in the JSON names the function and the code path it comes from):

    stage_latency  per-stage ms (decode, track, align, mel, a2l, generator, blend, encode),
                   p50/p95/p99 over ``frames`` frames after ``warmup``, per backend and frame
                   size, from :func:`rtdub.dub.dub_file` (the code of ``rtdub dub``) on a
                   generated talking-head clip (H.264 in, H.264 out through media.VideoWriter)
    throughput     frames/s and multiple of real time of those runs, and (full mode) of a
                   shared clip dubbed with foreign speech
    lookahead      for each lookahead: mouth-opening correlation and LSE-C/LSE-D/AV offset on
                   the clips (:func:`rtdub.measure.evaluation.reconstruct`), with the ground truth and
                   the frozen mouth as LSE reference rows, the TTS lip-closure AUC on the
                   generated face (:func:`rtdub.measure.evaluation.lip_closure`), the measured compute
                   and the latency the lookahead adds when the audio arrives just in time
    quality        model vs true-units vs frozen mouth on a folder of clips (DESIGN §5), with
                   LSE-C/LSE-D
    streaming      glass-to-glass over loopback WebRTC (reported as not available until the
                   streaming engine exposes a measurement hook)

LSE-C, LSE-D and the AV offset come from the lip-sync expert bundle (``--expert DIR``, default
``engines/syncnet``) through the functions of ``rtdub eval`` (:func:`rtdub.measure.scoring.sync_scores`
on :func:`rtdub.measure.scoring.expert_crop` crops: each output frame aligned with its own landmarks,
the clip's own audio, syncnet_python's formulas over ±15 frames). The bench renders in memory,
so the frames are scored before any H.264 encoding. The expert's provenance and status come
from its manifest (and the status paragraph of its README.md). Without a bundle, or without
clips, the figures are ``null`` with the reason, never estimated.

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
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..defaults import DEFAULT_LOOKAHEAD_MS

logger = logging.getLogger(__name__)

SCHEMA = "rtdub-bench/1"
STEAL_WARN_PCT = 2.0  # host CPU steal (% of CPU time) above which latency figures are flagged
SECTIONS = ("stage_latency", "throughput", "lookahead", "quality", "streaming")
BENCH_STAGES = ("decode", "track", "align", "mel", "a2l", "generator", "blend", "encode")
ALL_BACKENDS = ("onnx", "tensorrt")
PACKAGES = (
    "numpy", "onnxruntime", "mediapipe", "av", "aiortc", "opencv-python-headless",
    "scikit-image", "matplotlib", "tensorrt", "pycuda",
)  # fmt: skip
OFFSET_SYNC_FRAMES = 1  # an AV offset within ±1 frame counts as "in sync"
STREAMING_REASON = "streaming engine not built (no loopback measurement hook in rtdub.stream.session)"
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
    expert: Path | None = None  # lip-sync expert bundle; None: engines/syncnet (null LSE when absent)
    clips: Path = Path("../shared/media/clips")
    clip_frames: int | None = None  # cap per clip for lookahead/quality (None: whole clip)
    dub_audio: Path = Path("../shared/media/audio/french.wav")
    shared_throughput: bool = True  # also dub the first clip with ``dub_audio``
    lookaheads_ms: tuple[float, ...] = (0.0, 40.0, 80.0, 120.0)
    quality_lookahead_ms: float = DEFAULT_LOOKAHEAD_MS  # the default of ``rtdub dub``
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
    from ..model import SOURCE_ROOT as root

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

    from ..model import load_bundle

    b = load_bundle(model)
    files = {}
    for p in (b.a2l_path, b.generator_path, b.root / "manifest.json"):
        files[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return {"root": str(b.root), "name": b.info.get("name"), "crop_size": b.crop_size, "sha256_16": files}


def _sha16(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _offset_accuracy_fields(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every entry of the manifest that records an AV-offset accuracy (a key path naming an
    offset and an accuracy or a ±k rate), wherever an export put it."""
    found: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            low = path.lower()  # the whole path: e.g. heldout.offsets.within_1
            if "offset" in low and any(w in low for w in ("acc", "within", "correct")) and not isinstance(v, dict):
                found[path] = v
            else:
                found |= _offset_accuracy_fields(v, path)
    return found


def _readme_status(root: Path) -> str | None:
    """The paragraph of the bundle's README.md that starts with "Status" (markdown removed)."""
    f = root / "README.md"
    if not f.is_file():
        return None
    for para in f.read_text(errors="replace").split("\n\n"):
        text = " ".join(para.split()).replace("**", "")
        if text.lower().startswith("status"):
            return text
    return None


def expert_provenance(root: Path, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Where the expert bundle comes from and how good it is, from its own files only."""
    info: dict[str, Any] = {
        "root": str(root),
        "sha256_16": {n: _sha16(root / n) for n in ("video.onnx", "audio.onnx", "manifest.json")},
        "readme_status": _readme_status(root),
    }
    if manifest is None:
        return info
    tr = manifest.get("training") or {}
    info |= {
        "format": manifest.get("format"),
        "window": {k: manifest.get(k) for k in ("frames", "crop_size", "mel_frames", "mel_start")},
        "embed": manifest.get("embed"),
        "training": {
            k: tr.get(k) for k in ("step", "seconds", "augment", "train", "held_out", "held_out_scores") if k in tr
        },
        "offset_accuracy": _offset_accuracy_fields(manifest),
    }
    if info["offset_accuracy"]:
        acc = ", ".join(f"{k} = {v}" for k, v in info["offset_accuracy"].items())
        info["assessment"] = f"held-out AV-offset accuracy recorded in its manifest: {acc}"
    else:
        info["assessment"] = "its manifest records no held-out AV-offset accuracy" + (
            f"; {root / 'README.md'} says: {info['readme_status']}"
            if info["readme_status"]
            else ", so its LSE figures are unvalidated"
        )
    return info


def load_expert(cfg: BenchConfig) -> tuple[Any, dict[str, Any]]:
    """The lip-sync expert of ``cfg`` and its provenance. An explicit ``cfg.expert`` that does
    not load raises ModelError; a missing default bundle gives (None, reason)."""
    from ..exceptions import ModelError
    from .avsync import SyncNetExpert, default_expert_dir

    root = cfg.expert if cfg.expert is not None else default_expert_dir()
    try:
        ex = SyncNetExpert(root, threads=cfg.threads)
    except ModelError as exc:
        if cfg.expert is not None:
            raise
        info = expert_provenance(root, None)
        return None, info | {"status": "absent", "reason": f"no lip-sync expert: {exc}"}
    except Exception as exc:  # noqa: BLE001 - onnxruntime rejecting the files
        if cfg.expert is not None:
            raise ModelError(f"{root}: lip-sync expert does not load ({type(exc).__name__}: {exc})") from exc
        info = expert_provenance(root, None)
        return None, info | {"status": "absent", "reason": f"lip-sync expert does not load: {exc}"}
    return ex, expert_provenance(root, ex.manifest) | {"status": "loaded", "reason": None}


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
    from .. import audio, tts

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
        ok, skipped = self.backends()
        if not ok:
            raise RuntimeError(f"no backend available: {skipped}")
        return ok[0]


def available_backends(cfg: BenchConfig) -> tuple[list[str], list[dict[str, str]]]:
    """The backends of ``cfg`` that load here, and a note for each one that does not."""
    from ..backends import BackendConfig, get_backend
    from ..model import load_bundle

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
    from ..dub import DubOptions, dub_file
    from ..media import write_wav

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
                "source": f"rtdub.measure.bench.stage_latency -> rtdub.dub.dub_file(backend={name}) on a generated "
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
        "source": "rtdub.measure.bench.stage_latency",
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
        from ..dub import DubOptions, dub_file

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
        "source": "rtdub.measure.bench.throughput",
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
    from ..backends import BackendConfig, get_backend
    from ..model import load_bundle
    from .evaluation import load_clip, reconstruct, truth_expert_crops

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
        if ("frozen", cfg.quality_lookahead_ms) not in jobs:  # the reference row of the lookahead
            jobs.append(("frozen", cfg.quality_lookahead_ms))
    bundle = load_bundle(cfg.model)
    name = ctx.first_backend()
    backend = get_backend(name, bundle, BackendConfig(threads=cfg.threads))
    ctx.clip_results["backend"] = name
    renders: dict[str, dict[str, Any]] = ctx.clip_results["renders"]
    truth: dict[str, dict[str, Any]] = ctx.clip_results.setdefault("truth", {})
    ex = ctx.expert
    crop_size = ex.window.crop_size if ex is not None else None
    try:
        for path in clips:
            ctx.progress(f"clips: decoding and tracking {path.name}")
            data = load_clip(path, bundle, cfg.clip_frames)
            if ex is not None:
                truth[path.name] = _sync(ex, truth_expert_crops(data, ex.window.crop_size), data)
            for mode, la in jobs:
                ctx.progress(f"clips: {path.name} {mode} lookahead {la:g} ms")
                r = reconstruct(data, mode, bundle, backend, la, expert_crop_size=crop_size)
                renders.setdefault(f"{mode}@{la:g}", {})[path.name] = {
                    "scores": r.scores,
                    "sync": _sync(ex, r.expert_crops, data) if ex is not None else None,
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
    syncs = [*truth.values(), *(r["sync"] for rs in renders.values() for r in rs.values() if r["sync"])]
    ctx.clip_results["sync_wall_s"] = float(sum(v["wall_s"] for v in syncs)) if ex is not None else None
    return ctx.clip_results


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _sync(expert: Any, crops: Sequence[np.ndarray | None], clip: Any) -> dict[str, Any]:
    """LSE-C/LSE-D/AV offset/AVSu of one clip's frames (as ``rtdub eval`` scores a video),
    or the reason there is none."""
    from .scoring import sync_scores

    t0 = time.perf_counter()
    try:
        r = sync_scores(expert, crops, clip.mel.mel, clip.times)
    except ValueError as exc:
        return {"error": str(exc), "wall_s": time.perf_counter() - t0}
    return {
        "LSE_C": r.lse_c,
        "LSE_D": r.lse_d,
        "AV_offset": r.av_offset,
        "AVSu": r.avs_u,
        "faces": r.faces,
        "wall_s": time.perf_counter() - t0,
    }


def _lse(ctx: Context, per_clip: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Mean LSE-C/LSE-D over clips, the AV offset of each clip, and the reason when null."""
    reason: str | None = None
    if ctx.expert is None:
        reason = str(ctx.expert_info.get("reason") or "no lip-sync expert loaded")
    elif not per_clip:
        reason = f"no clips with audio in {ctx.cfg.clips}"
    ok = {k: v for k, v in per_clip.items() if v and "error" not in v}
    if reason is None and not ok:
        reason = "; ".join(f"{k}: {(v or {}).get('error')}" for k, v in per_clip.items())
    offsets = {k: v["AV_offset"] for k, v in ok.items()}
    return {
        "LSE_C": _mean([v["LSE_C"] for v in ok.values()]) if ok else None,
        "LSE_D": _mean([v["LSE_D"] for v in ok.values()]) if ok else None,
        "LSE_C_per_clip": {k: _finite(v["LSE_C"]) for k, v in ok.items()},
        "AV_offset_per_clip": offsets,
        "in_sync_clips": sum(abs(o) <= OFFSET_SYNC_FRAMES for o in offsets.values()),
        "LSE_clips": len(ok),
        "LSE_reason": reason,
    }


def _sync_of(renders: dict[str, Any], key: str) -> dict[str, dict[str, Any] | None]:
    return {c: r.get("sync") for c, r in renders.get(key, {}).items()}


LSE_DEFINITIONS = {
    "LSE_C": "lip-sync confidence (higher is better): median minus minimum over offsets -15..+15 frames "
    "of the mean distance between the expert's video and audio embeddings (syncnet_python); mean over clips. "
    "The expert's embeddings are unit vectors, so the values are not on the published LSE scale",
    "LSE_D": "lip-sync distance (lower is better): that minimum; mean over clips",
    "AV_offset": "the offset of the minimum, in frames (syncnet_python's sign; 0 = in sync); per clip",
    "in_sync_clips": f"clips whose AV offset is within ±{OFFSET_SYNC_FRAMES} frame",
    "sync_ground_truth": "the same measurement on the original clip with its own audio: what a perfect "
    "dub would score, and a check of the expert itself",
    "lse_scoring_wall_s": "wall time of the expert's embeddings and the LSE formulas over every clip render "
    "and the ground truth (part of clip_renders_wall_s)",
}


def _clip_lse(ctx: Context, sync: dict[str, Any] | None) -> dict[str, Any]:
    if sync is None or "error" in sync:
        reason = (sync or {}).get("error") or ctx.expert_info.get("reason") or "no lip-sync expert loaded"
        return {"LSE_C": None, "LSE_D": None, "AV_offset": None, "LSE_reason": reason}
    return {"LSE_C": _finite(sync["LSE_C"]), "LSE_D": _finite(sync["LSE_D"]), "AV_offset": sync["AV_offset"]}


def _held_out(ctx: Context, clips: Sequence[str]) -> dict[str, bool | None]:
    """For each clip: held out from the expert's training (True), seen (False), unknown (None)."""
    tr = ctx.expert_info.get("training") or {}
    held, seen = set(tr.get("held_out") or ()), set(tr.get("train") or ())
    return {c: True if Path(c).stem in held else False if Path(c).stem in seen else None for c in clips}


def lookahead(ctx: Context) -> dict[str, Any]:
    """Sync against latency for each lookahead."""
    from .. import audio
    from ..backends import BackendConfig, get_backend
    from ..model import load_bundle
    from .evaluation import lip_closure, tts_speech

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
                **_lse(ctx, _sync_of(renders, f"model@{la:g}")),
                "audio_wait_ms": wait,
                "compute_ms": cp,
                "added_latency_audio_just_in_time_ms": wait + p50,
                "added_latency_audio_buffered_ms": p50,
            }
        )
    qla = f"{cfg.quality_lookahead_ms:g}"
    frozen_moc = _mean([r["scores"]["MOC"] for r in renders.get(f"frozen@{qla}", {}).values()])
    true_moc = _mean([r["scores"]["MOC"] for r in renders.get(f"true-units@{qla}", {}).values()])
    return {
        "status": "ok",
        "backend": backend_name,
        "rows": rows,
        "baselines": {
            "lip_closure_auc_frozen": _finite(frozen.auc),
            "MOC_frozen": frozen_moc,
            "MOC_true_units": true_moc,
            "sync_ground_truth": _lse(ctx, clips.get("truth", {})),
            "sync_frozen": _lse(ctx, _sync_of(renders, f"frozen@{qla}")),
            "sync_frozen_lookahead_ms": cfg.quality_lookahead_ms,
        },
        "expert_held_out_clips": _held_out(ctx, clips.get("clips", [])),
        "closure_frames": {"total": n, "open_vowel": frozen.frames_open, "bilabial": frozen.frames_bilabial},
        "clips": clips.get("clips", []),
        "clips_note": None if clips.get("clips") else f"MOC skipped: no clips with audio in {cfg.clips}",
        "clip_frames": cfg.clip_frames,
        "clip_renders_wall_s": clips.get("wall_s"),
        "clip_renders_note": clips.get("wall_note"),
        "lse_scoring_wall_s": clips.get("sync_wall_s"),
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
            **LSE_DEFINITIONS,
        },
        "source": "rtdub.measure.bench.lookahead -> rtdub.measure.evaluation.reconstruct (MOC, LMD, output crops), "
        "rtdub.measure.scoring.sync_scores (LSE) and rtdub.measure.evaluation.lip_closure (AUC, compute)",
    }


def quality(ctx: Context) -> dict[str, Any]:
    """Model vs true-units vs frozen mouth on a folder of clips (DESIGN §5)."""
    cfg = ctx.cfg
    clips = _clip_renders(ctx)
    if not clips.get("clips"):
        return {
            "status": "skipped",
            "reason": f"no clips with audio in {cfg.clips} (folder absent or empty)",
            "source": "rtdub.measure.bench.quality",
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
                **_clip_lse(ctx, r.get("sync")),
            }
        mean[mode] = {k: _mean([r["scores"][k] for r in rs.values()]) for k in SCORES} | _lse(
            ctx, _sync_of(clips["renders"], f"{mode}@{la}")
        )
    return {
        "status": "ok",
        "backend": clips.get("backend"),
        "lookahead_ms": cfg.quality_lookahead_ms,
        "clips": clips["clips"],
        "clip_frames": cfg.clip_frames,
        "clip_renders_wall_s": clips.get("wall_s"),
        "clip_renders_note": clips.get("wall_note"),
        "lse_scoring_wall_s": clips.get("sync_wall_s"),
        "per_clip": per_clip,
        "mean": mean,
        "ground_truth_sync": _lse(ctx, clips.get("truth", {})),
        "expert_held_out_clips": _held_out(ctx, clips["clips"]),
        "definitions": {
            **LSE_DEFINITIONS,
            "LMD": "lip landmark distance, % of inter-ocular distance (lower is better)",
            "MOC": "mouth-opening correlation with the input",
            "PSNR/SSIM": "lower face of the aligned crop",
            "sharpness": "Laplacian variance of the mouth box, output over input",
            "modes": "model: audio-driven; true-units: the clip's own lip units (ceiling of the audio "
            "stage); frozen: the identity reference pasted back (baseline)",
        },
        "source": "rtdub.measure.bench.quality -> rtdub.measure.evaluation.reconstruct "
        "(same protocol as training/evaluate.py); "
        "LSE: rtdub.measure.scoring.sync_scores on the output crops (as rtdub eval)",
    }


STREAMING_MODULE = "rtdub.measure.loopbench"


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
        return {"status": "not available", "reason": STREAMING_REASON, "source": "rtdub.measure.bench.streaming"}
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
        source = "rtdub.measure.bench.streaming"
        return {"status": "error", "error": f"{' '.join(cmd[1:3])} timed out", "source": source}
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0 or not out.is_file():
        tail = " | ".join((res.stderr or "").strip().splitlines()[-3:])
        return {
            "status": "error",
            "error": f"{' '.join(cmd[1:3])} exited with {res.returncode}: {tail}",
            "source": "rtdub.measure.bench.streaming",
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
        "source": f"rtdub.measure.bench.streaming -> python -m {STREAMING_MODULE} --seconds {cfg.streaming_seconds:g} "
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
    lines += _expert_md(report.get("expert"))
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
        nulls = _Nulls()
        lines += [
            "",
            "## Lookahead trade-off",
            "",
            "| lookahead ms | MOC ↑ | LMD ↓ | lip-closure AUC ↑ | LSE-C ↑ | LSE-D ↓ | audio wait ms "
            "| compute p50 / p95 ms | added latency, audio just in time | added latency, audio buffered |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in la["rows"]:
            c = r["compute_ms"]
            lines.append(
                f"| {r['lookahead_ms']:g} | {_f(r['MOC'], 3)} | {_f(r['LMD'])} | {_f(r['lip_closure_auc'], 3)} | "
                f"{nulls.cell(r, 'LSE_C')} | {nulls.cell(r, 'LSE_D')} | {_f(r['audio_wait_ms'], 1)} | "
                f"{_f(c['p50'])} / {_f(c['p95'])} | "
                f"{_f(r['added_latency_audio_just_in_time_ms'], 1)} | {_f(r['added_latency_audio_buffered_ms'], 1)} |"
            )
        b = la["baselines"]
        lines += [
            "",
            f"- baselines: frozen mouth MOC {_f(b['MOC_frozen'], 3)}, true units MOC {_f(b['MOC_true_units'], 3)}, "
            f"frozen-mouth lip-closure AUC {_f(b['lip_closure_auc_frozen'], 3)}.",
            "- latency columns are derived (audio wait + measured compute p50), not glass-to-glass",
            f"- source: {la['source']}",
        ]
        if la.get("clips_note"):
            lines.append(f"- {la['clips_note']}")
        lines += _sync_md(la, nulls)
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
                "| clip | mode | LMD ↓ | MOC ↑ | PSNR ↑ | SSIM ↑ | sharpness | LSE-C ↑ | LSE-D ↓ | AV offset |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            nulls = _Nulls()
            rows = [(c, mode, r) for c, modes in q["per_clip"].items() for mode, r in modes.items()]
            rows += [("**mean**", mode, r) for mode, r in q["mean"].items()]
            for c, mode, r in rows:
                off = r.get("AV_offset")
                off_s = (
                    f"{off:+d}"
                    if isinstance(off, int)
                    else f"{r.get('in_sync_clips', 0)}/{r.get('LSE_clips', 0)} in sync"
                )
                lines.append(
                    f"| {c} | {mode} | {_f(r['LMD'])} | {_f(r['MOC'], 3)} | {_f(r['PSNR'])} | {_f(r['SSIM'], 3)} | "
                    f"{_f(r['sharpness'], 3)} | {nulls.cell(r, 'LSE_C')} | {nulls.cell(r, 'LSE_D')} | "
                    f"{off_s if r.get('LSE_C') is not None else '—'} |"
                )
            g = q.get("ground_truth_sync") or {}
            lines += [""]
            if g.get("LSE_C") is not None:
                lines.append(
                    f"- ground truth (each clip with its own audio): LSE-C {_f(g['LSE_C'], 3)}, "
                    f"LSE-D {_f(g['LSE_D'], 3)}, "
                    f"{g['in_sync_clips']}/{g['LSE_clips']} clips with an AV offset within ±{OFFSET_SYNC_FRAMES} frame"
                )
            lines += [
                f"- AV offset: frames, syncnet_python's sign (0 = in sync); mean rows: clips within "
                f"±{OFFSET_SYNC_FRAMES} frame",
                *nulls.notes(),
            ]
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


class _Nulls:
    """Table cells for figures that may be null: the value, or "null" with a footnote mark
    whose note gives the reason recorded in the JSON."""

    MARKS = "¹²³⁴⁵⁶⁷⁸⁹"

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def cell(self, row: dict[str, Any], key: str, digits: int = 3) -> str:
        v = row.get(key)
        if v is not None:
            return _f(v, digits)
        reason = str(row.get("LSE_reason") or "not measured")
        if reason not in self.reasons:
            self.reasons.append(reason)
        i = self.reasons.index(reason)
        return "null" + (self.MARKS[i] if i < len(self.MARKS) else f"({i + 1})")

    def notes(self) -> list[str]:
        return [
            f"- null{self.MARKS[i] if i < len(self.MARKS) else f'({i + 1})'}: {r}" for i, r in enumerate(self.reasons)
        ]


def _expert_md(ex: dict[str, Any] | None) -> list[str]:
    if not ex:
        return []
    if ex.get("status") != "loaded":
        return [f"- lip-sync expert: none loaded from `{ex.get('root')}` ({ex.get('reason')}): LSE figures are null"]
    tr = ex.get("training") or {}
    sha = ex.get("sha256_16") or {}
    desc = (
        f"- lip-sync expert: `{ex['root']}` ({ex.get('format')}; sha256 video {sha.get('video.onnx')}, "
        f"audio {sha.get('audio.onnx')})"
    )
    if tr:
        mins = tr.get("seconds")
        desc += (
            f"; trained {tr.get('step')} steps"
            + (f" in {mins / 60:.0f} min" if isinstance(mins, (int, float)) else "")
            + f", augmentation {'on' if tr.get('augment') else 'off'}"
        )
        if tr.get("held_out"):
            desc += f"; held out from its training: {', '.join(tr['held_out'])}"
        hs = tr.get("held_out_scores")
        if isinstance(hs, dict) and hs:
            desc += (
                "; held-out pair scores at the end of training (in-sync vs shifted pairs, acc chance 0.5): "
                + ", ".join(f"{k} {_f(v, 3)}" for k, v in hs.items())
            )
    return [desc, f"- lip-sync expert status: {ex.get('assessment')}"]


def _sync_md(la: dict[str, Any], nulls: _Nulls) -> list[str]:
    """The lookahead's LSE rows next to the reference rows (ground truth, frozen mouth)."""
    b = la["baselines"]
    clips = la.get("clips") or []
    rows: list[tuple[str, dict[str, Any]]] = [(f"model, lookahead {r['lookahead_ms']:g} ms", r) for r in la["rows"]]
    if "sync_ground_truth" in b:
        rows.append(("**ground truth** (each clip with its own audio)", b["sync_ground_truth"]))
    if "sync_frozen" in b:
        rows.append((f"**frozen mouth** (lookahead {b.get('sync_frozen_lookahead_ms', 0):g} ms)", b["sync_frozen"]))
    lines = [
        "",
        "### Lip sync against the expert (LSE over ±15 frames, as `rtdub eval`)",
        "",
        f"| render | LSE-C ↑ | LSE-D ↓ | AV offset per clip ({' / '.join(clips) or 'no clips'}) "
        f"| clips within ±{OFFSET_SYNC_FRAMES} frame |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows:
        offs = r.get("AV_offset_per_clip") or {}
        off_s = " / ".join(f"{offs[c]:+d}" if c in offs else "—" for c in clips) if offs else "—"
        in_sync = f"{r['in_sync_clips']}/{r['LSE_clips']}" if r.get("LSE_clips") else "—"
        lines.append(f"| {name} | {nulls.cell(r, 'LSE_C')} | {nulls.cell(r, 'LSE_D')} | {off_s} | {in_sync} |")
    held = la.get("expert_held_out_clips") or {}
    lines += [""]
    if held:
        groups = {"held out from the expert's training": True, "seen in its training": False, "not listed": None}
        parts = [f"{k}: {', '.join(c for c, v in held.items() if v is val)}" for k, val in groups.items()]
        lines.append("- clips " + "; ".join(p for p in parts if not p.endswith(": ")))
    lines += [
        "- AV offset: frames, syncnet_python's sign (0 = in sync); LSE scored on the rendered frames before "
        "encoding, each aligned with its own landmarks; LSE values are on the expert's unit-vector scale, "
        "not the published one",
        *nulls.notes(),
    ]
    return lines


def _streaming_md(st: dict[str, Any]) -> list[str]:
    r = st.get("result", {})
    lines = [f"Source: {st['source']}.", ""]
    steal = r.get("host_steal_pct")
    if isinstance(steal, (int, float)) and steal > STEAL_WARN_PCT:
        lines += [
            f"**Note: the host took {steal:.1f} % of this VM's CPU time (steal) during the run: the latencies "
            "are inflated by other tenants and not comparable with quiet runs.**",
            "",
        ]
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
    facts = []
    for k, v in r.items():
        if k in shown:
            continue
        if isinstance(v, dict) and "series" in v:  # per-second samples: in the JSON only
            v = {kk: vv for kk, vv in v.items() if kk != "series"}
        facts.append(f"{k}: {json.dumps(v)}")
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
        fig = Figure(figsize=(14, 4), layout="constrained")
        a1 = fig.add_subplot(1, 3, 1)
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
        a1.set_title("mouth opening vs lookahead", fontsize=9)
        a1.legend(fontsize=7)
        a3 = fig.add_subplot(1, 3, 2)
        lse_c = [r.get("LSE_C") for r in rows_]
        if any(y is not None for y in lse_c):
            a3.plot(las, [np.nan if y is None else y for y in lse_c], "o-", color="tab:purple", label="LSE-C model")
            for key, label, ls in (("sync_ground_truth", "ground truth", "--"), ("sync_frozen", "frozen mouth", ":")):
                ref = (b.get(key) or {}).get("LSE_C")
                if ref is not None:
                    a3.axhline(ref, color="k", linestyle=ls, linewidth=1, label=f"LSE-C {label}")
            a3.set_title("LSE-C vs lookahead (expert: see bench.md)", fontsize=9)
            a3.legend(fontsize=7)
        else:
            reason = next((r.get("LSE_reason") for r in rows_ if r.get("LSE_reason")), "not measured")
            a3.text(0.5, 0.5, "LSE-C: null\n" + textwrap.fill(str(reason), 40), ha="center", va="center", fontsize=8)
            a3.set_title("LSE-C vs lookahead", fontsize=9)
        a3.set_xlabel("lookahead (ms)")
        a3.set_ylabel("LSE-C (higher is better)")
        a2 = fig.add_subplot(1, 3, 3)
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
    # the expert first: an explicit --expert that does not load fails before anything is written
    expert, expert_meta = load_expert(cfg) if {"lookahead", "quality"} & set(cfg.sections) else (None, {})
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
        "command": command or "rtdub.measure.bench.run_bench",
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
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
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
    p.add_argument(
        "--expert", type=Path, default=None,
        help="lip-sync expert bundle for LSE-C/LSE-D (default engines/syncnet; null figures when absent)",
    )  # fmt: skip
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
        "expert": args.expert,
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
    from ..exceptions import InputError

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
