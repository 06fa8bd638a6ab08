"""Per-frame compute that high-resolution compositing adds (rtdub/render/hires.py).

    python -m benchmarks.hires_cost --clip ../shared/media/clips/speaker_a.mp4 [--frames 120]
        [--sizes 96 0 288 384] [--kernel cubic] [--details 0 1] [--threads 1] [--json OUT]

Every frame of the clip is rendered by one pipeline per render size (96 = the crop size: no
hi-res; 0 = chosen from the face size), interleaved frame by frame so that all of them see
the same machine load. The cost compared is what the render size changes: align (which makes
the hi-res reference crop), generator and blend (which includes the compositing, done in the
same resampling as the paste; "composite" columns), summed per frame; face tracking and the
audio stage are the same in every pipeline and left out. The minimum over frames is the least
disturbed by other processes on a shared machine; "added" is the median over frames of the
per-frame difference with the first size. With several ``--details`` (the fine-detail gain of
hi-res compositing) every size runs with each, labelled SIZE@DETAIL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import write_json
from rtdub import audio, media
from rtdub.backends import BackendConfig, get_backend
from rtdub.defaults import STREAM_DETAIL
from rtdub.face.tracker import FaceTracker
from rtdub.model import load_bundle
from rtdub.render.hires import KERNELS, RenderSizeConfig, detail_problem
from rtdub.render.pipeline import DubPipeline, PipelineConfig

PARTS = ("align", "generator", "blend")


def measure(
    clip: Path,
    sizes: list[int],
    frames: int,
    threads: int,
    model: Path | None = None,
    kernel: str = "cubic",
    details: tuple[float, ...] = (STREAM_DETAIL,),
) -> dict[str, dict[str, float]]:
    bundle = load_bundle(model)
    backend = get_backend("onnx", bundle, BackendConfig(threads=threads))
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(media.load_audio(clip))))
    images: list[tuple[np.ndarray, float]] = []
    for fr in media.iter_frames(clip):
        if len(images) >= frames:
            break
        images.append((fr.image, fr.time))
    runs = [(s, d) for s in sizes for d in details]
    trackers = [FaceTracker() for _ in runs]
    configs = [PipelineConfig(render=RenderSizeConfig(size=s, kernel=kernel, detail=d)) for s, d in runs]
    pipes = [DubPipeline(bundle, backend, tr, c) for c, tr in zip(configs, trackers, strict=True)]
    cost: list[list[float]] = [[] for _ in runs]
    comp: list[list[float]] = [[] for _ in runs]
    used: list[list[int]] = [[] for _ in runs]
    try:
        for img, t in images:
            for k, pipe in enumerate(pipes):
                res = pipe.process(img.copy(), t, mel)
                if res.face:
                    cost[k].append(sum(res.times[p] for p in PARTS))
                    comp[k].append(res.composite_ms)
                    used[k].append(res.render_size)
    finally:
        for tr in trackers:
            tr.close()
    out: dict[str, dict[str, float]] = {}
    for k, (s, d) in enumerate(runs):
        c = np.asarray(cost[k][10:])  # after warm-up
        out[str(s) if len(details) == 1 else f"{s}@{d:g}"] = {
            "render_size_p50": float(np.median(used[k])),
            "align_generator_blend_ms_p50": float(np.median(c)),
            "align_generator_blend_ms_p95": float(np.percentile(c, 95)),
            "align_generator_blend_ms_min": float(np.min(c)),
            "composite_ms_p50": float(np.median(comp[k][10:])),
            "composite_ms_min": float(np.min(comp[k][10:])),
            "added_ms_p50_vs_first": float(np.median(c - np.asarray(cost[0][10:]))),
            "frames": len(c),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="per-frame cost of hi-res compositing")
    p.add_argument("--clip", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 0])
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kernel", choices=sorted(KERNELS), default="cubic", help="hi-res interpolation")
    p.add_argument(
        "--details",
        type=float,
        nargs="+",
        default=[STREAM_DETAIL],
        help="fine-detail gains, 0..1 (default: the streams', like --kernel)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.clip.is_file():
        print(f"hires_cost: error: {args.clip}: no such file", file=sys.stderr)
        return 2
    if any(s != 0 and s < 96 for s in args.sizes):
        print("hires_cost: error: --sizes: 0 (automatic) or at least the crop size", file=sys.stderr)
        return 2
    if any(detail_problem(d) is not None for d in args.details):
        print("hires_cost: error: --details: each must be between 0 and 1", file=sys.stderr)
        return 2
    res = measure(args.clip, args.sizes, args.frames, args.threads, args.model, args.kernel, tuple(args.details))
    head = ("size", "R p50", "ms min", "ms p50", "ms p95", "comp min", "comp p50", "added")
    print(" ".join(f"{h:>8}" for h in head))
    for s, r in res.items():
        print(
            f"{s:>8} {r['render_size_p50']:8.0f} {r['align_generator_blend_ms_min']:8.2f} "
            f"{r['align_generator_blend_ms_p50']:8.2f} {r['align_generator_blend_ms_p95']:8.2f} "
            f"{r['composite_ms_min']:8.2f} {r['composite_ms_p50']:8.2f} {r['added_ms_p50_vs_first']:8.2f}"
        )
    if args.json is not None:
        write_json(args.json, {"clip": args.clip.name, "threads": args.threads, "results": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
