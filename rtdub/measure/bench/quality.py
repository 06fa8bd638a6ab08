"""The sync and quality sections of ``rtdub bench``, on real clips through the docs/design.md §5
reconstruction protocol (each clip dubbed with its own audio):

    lookahead      for each lookahead: mouth-opening correlation and LSE-C/LSE-D/AV offset on
                   the clips (:func:`rtdub.measure.evaluation.reconstruct`), with the ground truth and
                   the frozen mouth as LSE reference rows, the TTS lip-closure AUC on the
                   generated face (:func:`rtdub.measure.evaluation.lip_closure`), the measured compute
                   and the latency the lookahead adds when the audio arrives just in time
    quality        model vs true-units vs frozen mouth on a folder of clips (docs/design.md §5), with
                   LSE-C/LSE-D

Both sections share one render of each clip (:func:`_clip_renders`, decoded and tracked once,
cached on the :class:`~rtdub.measure.bench.sections.Context`). LSE-C, LSE-D and the AV offset come
from the lip-sync expert bundle (``--expert DIR``, default ``engines/syncnet``) through the
functions of ``rtdub eval`` (:func:`rtdub.measure.scoring.sync_scores` on
:func:`rtdub.measure.scoring.expert_crop` crops: each output frame aligned with its own
landmarks, the clip's own audio, syncnet_python's formulas over ±15 frames). The bench renders
in memory, so the frames are scored before any H.264 encoding. Without a bundle, or without
clips, the figures are ``null`` with the reason, never estimated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .clips import FPS, find_clips, no_clips_reason, talking_head_frames
from .sections import Context, percentiles

OFFSET_SYNC_FRAMES = 1  # an AV offset within ±1 frame counts as "in sync"


def _clip_renders(ctx: Context) -> dict[str, Any]:
    """Reconstruction of every clip in the modes and lookaheads the selected sections need,
    each clip decoded and tracked once. Cached on the context."""
    if ctx._clips_done:
        return ctx.clip_results
    ctx._clips_done = True
    t0 = time.perf_counter()
    from ...backends import BackendConfig, get_backend
    from ...model import load_bundle
    from ..evaluation import load_clip, reconstruct, truth_expert_crops

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
    """The mean of the finite values (None when there are none)."""
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _finite(x: float | None) -> float | None:
    """``x``, or None for a missing or non-finite figure (JSON has no NaN)."""
    return x if x is not None and math.isfinite(x) else None


def _sync(expert: Any, crops: Sequence[np.ndarray | None], clip: Any) -> dict[str, Any]:
    """LSE-C/LSE-D/AV offset/AVSu of one clip's frames (as ``rtdub eval`` scores a video),
    or the reason there is none."""
    from ..scoring import sync_scores

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
        reason = no_clips_reason(ctx.cfg.clips)
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
    """The per-clip sync scores of the renders ``key`` (``mode@lookahead``)."""
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
    """LSE-C/LSE-D/AV offset of one clip render, or nulls with the reason."""
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
    from ... import audio
    from ...backends import BackendConfig, get_backend
    from ...model import load_bundle
    from ..evaluation import lip_closure, tts_speech

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
        events = None
        if bundle.phonetic_path is not None:  # the phonetic drive on the TTS's own events
            ctx.progress("lookahead: lip closure, lips from the phoneme events")
            la0 = cfg.quality_lookahead_ms
            events = lip_closure(talking_head_frames(w, h, n), speech, FPS, bundle, backend, la0, drive="events")
        audio_base = None
        if bundle.fused:  # the audio-to-lip model alone, the baseline of the fused audio drive
            ctx.progress("lookahead: lip closure, the audio-to-lip model without the viseme recogniser")
            base = bundle.audio_model("base")
            base_backend = get_backend(backend_name, base, BackendConfig(threads=cfg.threads))
            try:
                la0 = cfg.quality_lookahead_ms
                audio_base = lip_closure(talking_head_frames(w, h, n), speech, FPS, base, base_backend, la0)
            finally:
                base_backend.close()
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
            "lip_closure_auc_events": None if events is None else _finite(events.auc),
            "lip_closure_auc_audio_base": None if audio_base is None else _finite(audio_base.auc),
            "MOC_frozen": frozen_moc,
            "MOC_true_units": true_moc,
            "sync_ground_truth": _lse(ctx, clips.get("truth", {})),
            "sync_frozen": _lse(ctx, _sync_of(renders, f"frozen@{qla}")),
            "sync_frozen_lookahead_ms": cfg.quality_lookahead_ms,
        },
        "expert_held_out_clips": _held_out(ctx, clips.get("clips", [])),
        "closure_frames": {"total": n, "open_vowel": frozen.frames_open, "bilabial": frozen.frames_bilabial},
        "clips": clips.get("clips", []),
        "clips_note": None if clips.get("clips") else f"MOC skipped: {no_clips_reason(cfg.clips)}",
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
            "(e.g. TTS chunks), so the lookahead costs nothing (docs/design.md §3)",
            **LSE_DEFINITIONS,
        },
        "source": "rtdub.measure.bench.quality.lookahead -> rtdub.measure.evaluation.reconstruct "
        "(MOC, LMD, output crops), rtdub.measure.scoring.sync_scores (LSE) and "
        "rtdub.measure.evaluation.lip_closure (AUC, compute)",
    }


def quality(ctx: Context) -> dict[str, Any]:
    """Model vs true-units vs frozen mouth on a folder of clips (docs/design.md §5)."""
    cfg = ctx.cfg
    clips = _clip_renders(ctx)
    if not clips.get("clips"):
        reason = no_clips_reason(cfg.clips) + ("" if cfg.clips is None else " (folder absent or empty)")
        return {"status": "skipped", "reason": reason, "source": "rtdub.measure.bench.quality.quality"}
    la = f"{cfg.quality_lookahead_ms:g}"
    per_clip: dict[str, dict[str, Any]] = {}
    mean: dict[str, dict[str, Any]] = {}
    from ..evaluation import SCORES

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
        "source": "rtdub.measure.bench.quality.quality -> rtdub.measure.evaluation.reconstruct "
        "(same protocol as training/evaluate.py); "
        "LSE: rtdub.measure.scoring.sync_scores on the output crops (as rtdub eval)",
    }
