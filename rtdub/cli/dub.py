"""``rtdub dub``: dub a video file with a dubbed audio track."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine import EngineConfig
from .options import add_engine_options, engine_config

EXAMPLES = """\
examples:
  rtdub dub --video talk.mp4 --audio dubbed.wav -o dubbed.mp4
  rtdub dub --video talk.mp4 --audio dubbed.m4a -o dubbed.mp4 --model hq --compare side_by_side.mp4
"""


def add_dub_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dub",
        help="dub a video file with a dubbed audio track",
        description="Dub a video file: re-render the speaker's mouth to follow the dubbed audio track, "
        "which replaces the original sound. The output lasts as long as the dubbed audio.",
        epilog=EXAMPLES,
    )
    p.add_argument("--video", required=True, type=Path, help="talking-head video (any frame rate)")
    p.add_argument("--audio", required=True, type=Path, help="dubbed speech (any format, any sample rate)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output MP4")
    p.add_argument("--compare", type=Path, default=None, help="also write input|output side by side")
    p.add_argument("--check-locality", action="store_true", help="verify that only masked pixels change")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_engine_options(p, EngineConfig.offline())
    p.set_defaults(func=cmd_dub)


def cmd_dub(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..dub import DubOptions, dub_file
    from ..quiet import stderr_columns, stderr_is_terminal

    opts = DubOptions(
        video=args.video,
        audio=args.audio,
        output=args.output,
        engine=engine_config(args, EngineConfig.offline()),
        compare=args.compare,
        check_locality=args.check_locality,
    )
    # a terminal gets a progress bar (created on the first frame, erased on an error, so an
    # error is always a single line); a pipe or a log file gets none. The terminal is asked
    # through rtdub.quiet: its native-log filter puts a pipe on fd 2, where isatty() is False
    show = not args.quiet and stderr_is_terminal()
    bars: list[tqdm] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bar = tqdm(total=total, unit="frame", desc="dub", disable=not show, file=sys.stderr, ncols=stderr_columns())
            bars.append(bar)
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
