"""Command-line front ends of the measuring tools: ``bench`` and ``eval``.

The options map one to one onto :class:`rtdub.measure.bench.config.BenchConfig`; an option left
out keeps the config's default (the real-media folders come from ``$RTDUB_MEDIA``). Importing
this module is light: the sections load their heavy modules (mediapipe, onnxruntime,
matplotlib) when they run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..defaults import MEDIA_ENV
from ..measure.bench.config import SECTIONS, BenchConfig
from ..measure.bench.run import run_bench


def _resolution(s: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as a pair (argparse type)."""
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {s!r}") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"resolution too small: {s}")
    return w, h


def _csv(s: str) -> list[str]:
    """A comma list, blanks dropped (argparse type)."""
    return [v.strip() for v in s.split(",") if v.strip()]


def add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rtdub bench``: see :mod:`rtdub.measure.bench`."""
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
    p.add_argument(
        "--clips", type=Path, default=None,
        help=f"folder of talking-head clips with audio (default ${MEDIA_ENV}/clips; none: those parts are skipped)",
    )  # fmt: skip
    p.add_argument("--clip-frames", type=int, default=None, help="use at most this many frames per clip")
    p.add_argument(
        "--dub-audio", type=Path, default=None,
        help=f"foreign speech of the shared-clip throughput run (default ${MEDIA_ENV}/audio/french.wav)",
    )  # fmt: skip
    p.add_argument(
        "--lookaheads", type=lambda s: [float(v) for v in _csv(s)], default=None,
        help="comma list of ms (default 0,40,80,120)",
    )  # fmt: skip
    p.set_defaults(func=cmd_bench)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig of parsed ``rtdub bench`` options (an option left out keeps the default)."""
    kw: dict[str, Any] = {
        "out": args.out,
        "threads": args.threads,
        "model": args.model,
        "expert": args.expert,
    }
    optional = {
        "clips": args.clips,
        "dub_audio": args.dub_audio,
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
    """Run ``rtdub bench``, print the tables and the written files; 1 when a section failed."""
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


def add_eval_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rtdub eval``: see :mod:`rtdub.measure.scoring`."""
    p = sub.add_parser("eval", help="score a dubbed video: LSE-C/D, AV offset, AVS; PSNR/SSIM/LMD/MOC")
    p.add_argument("--video", required=True, type=Path, help="the video to score (e.g. rtdub dub's output)")
    p.add_argument("--audio", required=True, type=Path, help="the speech it should be in sync with")
    p.add_argument("--reference", type=Path, default=None, help="ground-truth video (frames paired by timestamp)")
    p.add_argument("--expert", type=Path, default=None, help="lip-sync expert bundle (default engines/syncnet)")
    p.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    p.add_argument(
        "--no-evidence",
        action="store_true",
        help="AV offset from the lip-sync expert alone, without the mouth-opening evidence of the audio",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from ..exceptions import InputError
    from ..measure.avsync import SyncNetExpert
    from ..measure.scoring import evaluate_files, format_report

    if args.threads < 1:
        raise InputError("--threads", f"must be a whole number >= 1, got {args.threads}")
    expert = SyncNetExpert(args.expert, threads=args.threads)
    evidence = None
    if not args.no_evidence:
        import logging

        from ..exceptions import ModelError
        from ..measure.phonesync import GapPredictor

        try:
            evidence = GapPredictor(threads=args.threads)
        except (ModelError, OSError) as exc:
            logging.getLogger(__name__).warning("AV offset from the expert alone (no audio-to-lip model: %s)", exc)
    rep = evaluate_files(args.video, args.audio, args.reference, expert, evidence, use_evidence=evidence is not None)
    if args.json:
        print(json.dumps(rep.to_json()))
    else:
        print("\n".join(format_report(rep)))
    return 0
