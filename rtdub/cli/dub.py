"""``rtdub dub``: dub a video file with a dubbed audio track."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from ..engine import EngineConfig
from ..exceptions import InputError
from .options import add_engine_options, engine_config

EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a command ended by it
SPOOL_ENV = "RTDUB_SPOOL_MB"  # the frame spool's disk budget in MB (rtdub.dub.SPOOL_BYTES)

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
    p.add_argument(
        "--face", default="largest", metavar="largest|center|INDEX",
        help="with several faces in the frame, the one to dub: the largest, the one nearest the centre, "
        "or an index from the left (0 = leftmost)",
    )  # fmt: skip
    g = p.add_argument_group("lips from phonemes (README: formats)")
    g.add_argument(
        "--phonemes", type=Path, default=None, metavar="FILE",
        help="timed phonemes or visemes of the dubbed speech: Amazon Polly speech marks, Azure viseme "
        "events or rtdub's JSON (detected)",
    )  # fmt: skip
    g.add_argument("--text", default=None, help="the dubbed speech's text, aligned to the audio (needs --language)")
    g.add_argument("--language", default=None, help="the text's language, an espeak-ng code (e.g. es, de, en-us)")
    add_engine_options(p, EngineConfig.offline())
    p.set_defaults(func=cmd_dub)


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by ``timeout``, systemd, container runtimes), raised in the main thread so
    that the run unwinds as from Ctrl-C: the partial output and the frame spool are removed."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated`, once (a second one during the
    cleanup is ignored); the previous handler comes back after. Off the main thread, where
    no handler can be installed, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def spool_bytes(text: str | None) -> int | None:
    """``$RTDUB_SPOOL_MB`` in bytes (None when unset); InputError unless a number > 0."""
    if not text:
        return None
    try:
        mb = float(text)
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and mb > 0):
        raise InputError(SPOOL_ENV, f"must be a number of megabytes > 0, got {text!r}")
    return int(mb * 2**20)


def cmd_dub(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..drive.choice import DriveSpec
    from ..dub import SPOOL_BYTES, DubOptions, describe_face, dub_file, release_freed_frames
    from ..face.tracker import parse_face_choice
    from ..quiet import stderr_columns, stderr_is_terminal

    try:
        face = parse_face_choice(args.face)
    except ValueError as exc:
        raise InputError("--face", str(exc)) from None
    spool = spool_bytes(os.environ.get(SPOOL_ENV))
    opts = DubOptions(
        video=args.video,
        audio=args.audio,
        output=args.output,
        engine=engine_config(args, EngineConfig.offline()),
        compare=args.compare,
        check_locality=args.check_locality,
        face=face,
        spool_bytes=SPOOL_BYTES if spool is None else spool,
        drive=DriveSpec(phonemes=args.phonemes, text=args.text, language=args.language),
    )
    opts.drive.check()
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

    release_freed_frames()
    try:
        with sigterm_raises():
            rep = dub_file(opts, progress)
    except BaseException as exc:
        for b in bars:
            b.leave = False
            b.close()
        if isinstance(exc, Terminated):
            print("rtdub: terminated", file=sys.stderr)
            return EXIT_TERMINATED
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
    print(
        f"faces: {rep.faces}, frames without a face (copied unchanged): {rep.no_face}, "
        f"frames with more than one face: {rep.multi_face}, silent: {rep.silent}"
    )
    if rep.multi_face:
        print(f"with several faces (up to {rep.most_faces}) the {describe_face(face)} was dubbed: --face chooses")
    if opts.drive.name != "audio":
        if rep.drive == "audio":
            print(f"lips: from the audio (the {opts.drive.name} could not be used; see the warning)")
        else:
            print(f"lips: from the {rep.drive}; frames that took the audio drive: {rep.drive_fallback}")
    if rep.pixels_changed_outside_mask is not None:
        print(f"pixels changed outside the blend mask: {rep.pixels_changed_outside_mask}")
    stages = "  ".join(f"{k} {p50:.1f}/{p95:.1f}" for k, (p50, p95) in rep.percentiles().items())
    print(f"per-frame ms (p50/p95): {stages}")
    return 0
