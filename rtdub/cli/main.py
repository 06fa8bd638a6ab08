"""The ``rtdub`` command line: the parser, the command families (``dub``; ``serve``, ``join``,
``camera``; ``bench``, ``eval``) and the mapping of errors to exit codes.

Each family lives in its own module of this package; :data:`COMMANDS` lists them. The engine
flags come from :mod:`rtdub.cli.options`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from ..exceptions import BackendUnavailable, InputError, ModelError, RtdubError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtdub", description="real-time lip-sync dubbing")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def _add_dub(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .dub import add_dub_command

    add_dub_command(sub)


def _add_stream_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .stream import add_stream_commands  # serve, join, camera

    add_stream_commands(sub)


def _add_measure_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # light at import: the sections and the scores load their heavy modules when they run
    from .measure import add_bench_command, add_eval_command

    add_bench_command(sub)  # latency, throughput, lookahead, quality
    add_eval_command(sub)  # LSE-C/D, AV offset, AVS; PSNR/SSIM/LMD/MOC


# the command families, in the order ``rtdub --help`` lists them: add a command here
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_dub,
    _add_stream_commands,
    _add_measure_commands,
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
