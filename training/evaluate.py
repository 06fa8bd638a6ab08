"""Evaluation protocol of docs/design.md §5 on a folder of talking-head clips (``make eval``).

    python -m training.evaluate --clips ../shared/media/clips --model engines/default --out runs/eval
        [--render-size 0|96|192|...]   (0: the runtime's choice from the face size; 96: no hi-res)
        [--open-quantile Q]            (identity reference: target mouth opening; 0: most closed)
        [--kernel linear|cubic|lanczos] (interpolation of the reference texture at R; lanczos)
        [--detail G]                   (the reference's fine detail kept under the colour; 1)

``--clips`` and ``--audio`` default to ``$RTDUB_MEDIA/clips`` and ``$RTDUB_MEDIA/audio/french.wav``
(rtdub.defaults.media_path); with RTDUB_MEDIA unset they must be given (``--audio`` not with
``--skip-speed``).

Reconstruction: every clip is dubbed with its own audio, and compared with the input on
LMD, mouth-opening correlation (MOC), PSNR/SSIM of the lower face and mouth sharpness
and, on the open half of the frames, the mouth-interior contrast (a teeth proxy), for
    model        the bundle, driven by the audio (what users get)
    true-units   the bundle's generator fed the clip's own lip units (the audio stage's ceiling)
    frozen       the identity reference pasted back with no motion (the baseline to beat)
The model never sees the ground-truth mouth: the pose input hides the lower face and the
identity reference is chosen causally, at least 1 s in the past (except during the first
second, where the first frame has to serve).

Dubbing: a TTS sentence with known phoneme timings is dubbed onto the first clip; the AUC
of the inner-lip gap between open-vowel frames and /p b m/ frames measures lip closure.
Speed: the first clip dubbed with a foreign-language file through the CLI path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from rtdub import media
from rtdub.backends import BackendConfig, get_backend
from rtdub.backends.base import Backend
from rtdub.defaults import DEFAULT_LOOKAHEAD_MS, MEDIA_ENV, media_path
from rtdub.dub import DubOptions, LoopedFrames, dub_file
from rtdub.engine import EngineConfig
from rtdub.measure.evaluation import MODES, lip_closure, load_clip, reconstruct, tts_speech
from rtdub.model import AUDIO_MODELS, ModelBundle, load_bundle
from rtdub.render.hires import KERNELS, RenderSizeConfig, detail_problem
from rtdub.render.reference import ReferenceConfig

logger = logging.getLogger("training.evaluate")


def reconstruction(
    clip: Path,
    bundle: ModelBundle,
    backend: Backend,
    lookahead_ms: float,
    render: RenderSizeConfig | None = None,
    reference: ReferenceConfig | None = None,
) -> dict[str, dict[str, float]]:
    """Scores of every mode on ``clip`` dubbed with its own audio (rtdub.measure.evaluation), with
    the pipeline's per-frame compute (median ms) and the median render size."""
    data = load_clip(clip, bundle)
    res = {}
    for mode in MODES:
        r = reconstruct(data, mode, bundle, backend, lookahead_ms, render=render, reference=reference)
        res[mode] = dict(r.scores)
        res[mode]["frame_ms_p50"] = float(np.median(r.frame_ms))
        if r.composite_ms is not None and r.render_size is not None:
            res[mode]["composite_ms_p50"] = float(np.median(r.composite_ms))
            res[mode]["render_size_p50"] = float(np.median(r.render_size))
        logger.info("%s %s %s", clip.name, mode, res[mode])
    return res


def dubbing_auc(
    clip: Path,
    bundle: ModelBundle,
    backend: Backend,
    lookahead_ms: float,
    render: RenderSizeConfig | None = None,
    reference: ReferenceConfig | None = None,
) -> dict[str, object]:
    """Dub ``clip`` (ping-pong looped) with TTS speech of known phoneme timings; AUC of the
    inner-lip gap between open-vowel frames and /p b m/ frames (0.5 = no closure signal)."""
    speech = tts_speech()
    fps = float(media.probe_video(clip).fps)
    res: dict[str, object] = {}
    for mode in ("model", "frozen"):
        src = LoopedFrames(clip, spool=True)
        try:
            frames = (src.at(i / fps) for i in range(10**9))
            lc = lip_closure(
                frames,
                speech,
                fps,
                bundle,
                backend,
                lookahead_ms,
                frozen=mode == "frozen",
                render=render,
                reference=reference,
            )
        finally:
            src.close()
        res[mode] = lc.auc
        res["frames_open"], res["frames_bilabial"] = lc.frames_open, lc.frames_bilabial
    return res


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    cols = ("LMD", "MOC", "PSNR", "SSIM", "sharpness", "interior")
    fmt = {c: "{:.2f}" if c in ("LMD", "PSNR") else "{:.3f}" for c in cols}
    lines = [
        "| clip | mode | LMD ↓ | MOC ↑ | PSNR ↑ | SSIM ↑ | sharpness | interior |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, mode: str, r: dict[str, float]) -> str:
        return f"| {name} | {mode} | " + " | ".join(fmt[c].format(r[c]) for c in cols) + " |"

    for clip, modes in results.items():
        lines += [row(clip, mode, r) for mode, r in modes.items()]
    for mode in MODES:
        mean = {c: float(np.nanmean([m[mode][c] for m in results.values()])) for c in cols}
        lines.append(row("**mean**", mode, mean))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="reconstruction, dubbing and speed evaluation")
    p.add_argument(
        "--clips",
        type=Path,
        default=media_path("clips"),
        help=f"folder of speaker_*.mp4 clips (default: ${MEDIA_ENV}/clips)",
    )
    p.add_argument(
        "--audio",
        type=Path,
        default=media_path("audio", "french.wav"),
        help=f"foreign-language speech for the speed run (default: ${MEDIA_ENV}/audio/french.wav)",
    )
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/eval"))
    p.add_argument("--lookahead-ms", type=float, default=DEFAULT_LOOKAHEAD_MS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--audio-model",
        choices=AUDIO_MODELS,
        default="fused",
        help="the bundle's audio drive (rtdub.model.AUDIO_MODELS)",
    )
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--render-size", type=int, default=None, help="hi-res render size (0: from the face size; 96: off)")
    p.add_argument(
        "--kernel",
        choices=sorted(KERNELS),
        default=RenderSizeConfig.kernel,
        help="hi-res interpolation (default: %(default)s)",
    )
    p.add_argument(
        "--detail",
        type=float,
        default=RenderSizeConfig.detail,
        help="hi-res: the reference's fine detail kept under the colour, 0..1 (default: %(default)s)",
    )
    p.add_argument(
        "--open-quantile",
        type=float,
        default=None,
        help="identity reference: target mouth opening, a quantile of the recent ones (0: most closed)",
    )
    args = p.parse_args(argv)
    if args.clips is None:
        p.error(f"--clips is required when {MEDIA_ENV} is unset")
    if args.audio is None and not args.skip_speed:
        p.error(f"--audio is required when {MEDIA_ENV} is unset (or pass --skip-speed)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    clips = sorted(c for c in args.clips.glob("speaker_*.mp4"))
    if not clips:
        print(f"evaluate: error: {args.clips}: no speaker_*.mp4 clips")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.model).audio_model(args.audio_model)
    backend = get_backend("onnx", bundle, BackendConfig(threads=args.threads))
    if (problem := detail_problem(args.detail)) is not None:
        print(f"evaluate: error: --detail {problem}")
        return 2
    render = RenderSizeConfig(size=args.render_size or 0, kernel=args.kernel, detail=args.detail)
    if 0 < render.size < bundle.crop_size:
        print(f"evaluate: error: --render-size must be 0 or at least {bundle.crop_size}")
        return 2
    if args.open_quantile is not None and not 0.0 <= args.open_quantile <= 1.0:
        print("evaluate: error: --open-quantile must be in [0, 1]")
        return 2
    reference = None if args.open_quantile is None else ReferenceConfig(open_quantile=args.open_quantile)
    results = {c.stem: reconstruction(c, bundle, backend, args.lookahead_ms, render, reference) for c in clips}
    report: dict[str, object] = {
        "model": str(bundle.root),
        "lookahead_ms": args.lookahead_ms,
        "audio_model": args.audio_model,
        "render_size": args.render_size,
        "open_quantile": args.open_quantile,
        "kernel": args.kernel,
        "detail": args.detail,
        "reconstruction": results,
    }
    report["dubbing_auc"] = dubbing_auc(clips[0], bundle, backend, args.lookahead_ms, render, reference)
    if not args.skip_speed and args.audio is not None and args.audio.is_file():
        t0 = time.perf_counter()
        engine = dataclasses.replace(EngineConfig.offline(), model=args.model, threads=args.threads)
        engine = engine.with_options(render_size=render.size, kernel=render.kernel, detail=render.detail)
        opts = DubOptions(clips[0], args.audio, args.out / "speed.mp4", engine=engine)
        rep = dub_file(opts)
        report["speed"] = {
            "clip": clips[0].name,
            "audio": args.audio.name,
            "frames": rep.frames,
            "wall_s": rep.wall,
            "frames_per_s": rep.frames_per_second,
            "x_realtime": rep.realtime_factor,
            "stage_ms_p50_p95": rep.percentiles(),
            "total_s": time.perf_counter() - t0,
        }
    md = table(results)
    (args.out / "eval.json").write_text(json.dumps(report, indent=1))
    (args.out / "eval.md").write_text(md + "\n")
    print(md)
    print("dubbing AUC (open vowels vs /p b m/):", report["dubbing_auc"])
    if "speed" in report:
        s = report["speed"]
        assert isinstance(s, dict)
        print(f"speed: {s['frames_per_s']:.1f} frames/s, {s['x_realtime']:.2f}x real time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
