"""The ``rtdub`` command line: the parser, the command families (``dub``; ``serve``, ``join``,
``camera``; ``bench``, ``eval``) and the mapping of errors to exit codes.

Each family lives in its own module of this package; :data:`COMMANDS` lists them. The engine
flags come from :mod:`rtdub.cli.options`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from ..exceptions import BackendUnavailable, InputError, ModelError, RtdubError

EXIT_USAGE = 2
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
VERBOSE_HELP = "more log output: -v info, -vv debug (before or after the command)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's help: each option's default, where its text does not already give it
    and there is one to give (not None, not a flag's); texts with line breaks (the examples
    of an epilog) keep them, the others are wrapped."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None or action.default == argparse.SUPPRESS or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


# the attributes every LogRecord has: the rest came in through ``extra``
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class ExtraFormatter(logging.Formatter):
    """A log line with the record's ``extra`` fields after the message:
    ``WARNING rtdub.stream.scheduler: frame late (late_ms=12.3 mode=2)``."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        extra = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")}
        if not extra:
            return text
        return f"{text} ({' '.join(f'{k}={_field(v)}' for k, v in extra.items())})"


def _field(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"  # 12.3456789 -> 12.3457
    text = str(value)
    return repr(text) if not text or any(c in text for c in " =()\n") else text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rtdub")
    except PackageNotFoundError:  # a source tree that was never installed
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtdub", description="real-time lip-sync dubbing", formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"rtdub {_version()}")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    for cmd in sub.choices.values():
        cmd.formatter_class = HelpFormatter
        # -v also after the command; counted apart (a subcommand's values replace the main
        # parser's) and added to the main parser's count in main()
        cmd.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=0, help=VERBOSE_HELP)
    return p


def verbosity(args: argparse.Namespace) -> int:
    """How many -v were given, before the command and after it."""
    return int(args.verbose) + int(getattr(args, "verbose_after", 0))


def configure_logging(verbose: int) -> None:
    """Log lines on stderr, with their extra fields: WARNING, -v INFO, -vv DEBUG."""
    handler = logging.StreamHandler()
    handler.setFormatter(ExtraFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), handlers=[handler])


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


def _add_enroll(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .enroll import add_enroll_command  # torch only when it runs

    add_enroll_command(sub)


# the command families, in the order ``rtdub --help`` lists them: add a command here
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_dub,
    _add_stream_commands,
    _add_measure_commands,
    _add_enroll,
]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # a real command line, not a call from Python code
        from ..quiet import install_native_log_filter

        install_native_log_filter()
    configure_logging(verbosity(args))
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's shutdown
        return code
    except (InputError, ModelError, BackendUnavailable) as exc:
        print(f"rtdub: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RtdubError as exc:
        print(f"rtdub: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rtdub: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout went to a reader that stopped reading (rtdub ... | head)
        try:  # no second error when Python flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it


if __name__ == "__main__":
    sys.exit(main())
