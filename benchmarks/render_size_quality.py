"""What hi-res compositing buys at a webcam's resolution (the live default turns it off).

    python -m benchmarks.render_size_quality [--clips ../shared/media/clips] [--height 480]
        [--sizes 96 0] [--frames 0] [--lookahead-ms 100] [--json OUT]

Each dev clip (``speaker_*.mp4``) is scaled to ``--height`` px (a 640x480 call puts a face of
about that size in the frame), then dubbed with its own audio through
``rtdub.measure.evaluation.reconstruct`` (the protocol of training/evaluate.py) once per render size:
96 = the bundle's crop size (no hi-res compositing, what ``rtdub serve`` does by default),
0 = chosen from the face size. Prints LMD, MOC, PSNR, SSIM and the mouth sharpness ratio per
clip and their mean, and the render size used (median over frames).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import write_json
from rtdub.backends import BackendConfig, get_backend
from rtdub.defaults import MEDIA_ENV, media_path
from rtdub.measure.evaluation import load_clip, reconstruct
from rtdub.model import load_bundle
from rtdub.render.hires import RenderSizeConfig

SCORES = ("LMD", "MOC", "PSNR", "SSIM", "sharpness")


def measure(
    clips: list[Path], height: int, sizes: list[int], frames: int, lookahead_ms: float, model: Path | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """{clip: {size: scores + render_size}} and a "mean" entry over the clips."""
    bundle = load_bundle(model)
    backend = get_backend("onnx", bundle, BackendConfig(threads=1))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for path in clips:
        clip = load_clip(path, bundle, max_frames=frames or None, height=height)
        out[clip.name] = {}
        for size in sizes:
            r = reconstruct(clip, "model", bundle, backend, lookahead_ms, render=RenderSizeConfig(size=size))
            used = r.render_size[r.render_size > 0] if r.render_size is not None else np.zeros(0)
            row = {k: float(r.scores[k]) for k in SCORES}
            row["render_size"] = float(np.median(used)) if used.size else float("nan")
            out[clip.name][str(size)] = row
    out["mean"] = {
        str(s): {k: float(np.nanmean([out[c][str(s)][k] for c in out])) for k in (*SCORES, "render_size")}
        for s in sizes
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="quality of hi-res compositing at a webcam's resolution")
    p.add_argument("--clips", type=Path, default=media_path("clips"), help=f"default ${MEDIA_ENV}/clips")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 0])
    p.add_argument("--frames", type=int, default=0, help="frames per clip (0: all)")
    p.add_argument("--lookahead-ms", type=float, default=100.0)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.clips is None:
        print(f"render_size_quality: error: give --clips or set {MEDIA_ENV}", file=sys.stderr)
        return 2
    clips = sorted(args.clips.glob("speaker_*.mp4")) if args.clips.is_dir() else []
    if not clips:
        print(f"render_size_quality: error: no speaker_*.mp4 clips in {args.clips}", file=sys.stderr)
        return 2
    if args.height < 64 or any(s != 0 and s < 96 for s in args.sizes):
        print("render_size_quality: error: --height >= 64; --sizes 0 (automatic) or >= the crop size", file=sys.stderr)
        return 2
    res = measure(clips, args.height, args.sizes, args.frames, args.lookahead_ms, args.model)
    print(f"{'clip':<10} {'size':>5} {'R':>5} " + " ".join(f"{k:>9}" for k in SCORES))
    for name, rows in res.items():
        for s, r in rows.items():
            print(f"{name:<10} {s:>5} {r['render_size']:5.0f} " + " ".join(f"{r[k]:9.3f}" for k in SCORES))
    write_json(args.json, {"height": args.height, "lookahead_ms": args.lookahead_ms, "results": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
