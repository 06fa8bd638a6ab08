"""The ``rtdub`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ..defaults import DEFAULT_DETAIL, DEFAULT_LOOKAHEAD_MS
from ..exceptions import BackendUnavailable, InputError, ModelError, RtdubError

EXIT_USAGE = 2


def _add_dub(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dub", help="dub a video file with a dubbed audio track")
    p.add_argument("--video", required=True, type=Path, help="talking-head video (any frame rate)")
    p.add_argument("--audio", required=True, type=Path, help="dubbed speech (any format, any sample rate)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output MP4")
    p.add_argument(
        "--lookahead-ms",
        type=float,
        default=DEFAULT_LOOKAHEAD_MS,
        help=f"audio lookahead of the lip stage (0-120, default {DEFAULT_LOOKAHEAD_MS:g})",
    )
    p.add_argument("--model", type=Path, default=None, help="model bundle directory (default: engines/default)")
    p.add_argument("--backend", default="onnx", help="onnx (CPU) or tensorrt (GPU)")
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument(
        "--render-size",
        type=int,
        default=0,
        help="side in px of the re-rendered face crop: 0 (default) follows the face's size in the frame, "
        "the model's crop size (96) turns high-resolution compositing off",
    )
    add_look_options(p, "lanczos", DEFAULT_DETAIL)
    p.add_argument("--compare", type=Path, default=None, help="also write input|output side by side")
    p.add_argument("--check-locality", action="store_true", help="verify that only masked pixels change")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dub)


def add_look_options(p: argparse.ArgumentParser, kernel: str, detail: float) -> None:
    """--kernel, --detail and --reference-opening, shared by ``dub`` and the streaming commands
    (with their own defaults for the first two)."""
    from ..render.reference import ReferenceConfig

    p.add_argument(
        "--kernel",
        choices=("linear", "cubic", "lanczos"),
        default=kernel,
        help=f"interpolation of the reference's texture in hi-res compositing (default {kernel})",
    )
    p.add_argument(
        "--detail",
        type=float,
        default=detail,
        metavar="G",
        help="hi-res compositing: how much of the reference's fine detail to keep under the "
        f"synthesised colour, 0..1 (default {detail:g}; 0 = the generator's mix alone, cheaper)",
    )
    p.add_argument(
        "--reference-opening",
        type=float,
        default=ReferenceConfig.open_quantile,
        metavar="Q",
        help="identity reference: the mouth opening to look for, as a quantile of the last 10 s "
        "(0 = most closed; the default 0.5 shows the speaker's teeth)",
    )


def check_look_options(args: argparse.Namespace) -> None:
    from ..render.hires import detail_problem

    problem = detail_problem(args.detail)
    if problem is not None:
        raise InputError("--detail", problem)
    if not 0.0 <= args.reference_opening <= 1.0:
        raise InputError("--reference-opening", "must be between 0 and 1")


def cmd_dub(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..dub import DubOptions, dub_file

    if args.lookahead_ms < 0:
        raise InputError("--lookahead-ms", "must be >= 0")
    if args.render_size < 0:
        raise InputError("--render-size", "must be 0 (automatic) or a size in pixels")
    check_look_options(args)
    opts = DubOptions(
        video=args.video,
        audio=args.audio,
        output=args.output,
        model=args.model,
        backend=args.backend,
        lookahead_ms=args.lookahead_ms,
        render_size=args.render_size,
        kernel=args.kernel,
        detail=args.detail,
        reference_opening=args.reference_opening,
        threads=args.threads,
        compare=args.compare,
        check_locality=args.check_locality,
    )
    # a terminal gets a progress bar (created on the first frame, erased on an error, so an
    # error is always a single line); a pipe or a log file gets none
    show = not args.quiet and sys.stderr.isatty()
    bars: list[tqdm] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="frame", desc="dub", disable=not show, file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        rep = dub_file(opts, progress)
    except BaseException:
        for b in bars:
            b.leave = False
            b.close()
        raise
    for b in bars:
        b.close()
    print(f"wrote {rep.output}")
    if opts.compare:
        print(f"wrote {opts.compare}")
    print(
        f"{rep.frames} frames ({rep.duration:.2f} s at {rep.fps:.2f} fps) in {rep.wall:.2f} s: "
        f"{rep.frames_per_second:.1f} frames/s, {rep.realtime_factor:.2f}x real time"
    )
    print(f"faces: {rep.faces}, frames without a face (copied unchanged): {rep.no_face}, silent: {rep.silent}")
    if rep.pixels_changed_outside_mask is not None:
        print(f"pixels changed outside the blend mask: {rep.pixels_changed_outside_mask}")
    stages = "  ".join(f"{k} {p50:.1f}/{p95:.1f}" for k, (p50, p95) in rep.percentiles().items())
    print(f"per-frame ms (p50/p95): {stages}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtdub", description="real-time lip-sync dubbing")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    _add_dub(sub)
    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return p


def _add_stream_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .stream import add_stream_commands  # serve, join, camera

    add_stream_commands(sub)


def _add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..measure.bench import add_bench_command  # light at import: heavy modules load inside the sections

    add_bench_command(sub)


def _add_eval_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..measure.scoring import add_eval_command  # LSE-C/D, AV offset, AVS; PSNR/SSIM/LMD/MOC

    add_eval_command(sub)


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_stream_commands,
    _add_bench_command,
    _add_eval_command,
]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # a real command line, not a call from Python code
        from ..quiet import install_native_log_filter

        install_native_log_filter()
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (InputError, ModelError, BackendUnavailable) as exc:
        print(f"rtdub: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RtdubError as exc:
        print(f"rtdub: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rtdub: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
