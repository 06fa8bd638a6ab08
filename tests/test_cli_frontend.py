"""The command line as a person meets it: the progress bar on a terminal (and none on a pipe)
although rtdub.quiet puts a pipe on fd 2, ``--version``, ``-v`` after the command, log lines
that keep their data, help with examples and defaults, and a closed stdout pipe."""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from rtdub.cli.main import LOG_FORMAT, ExtraFormatter, HelpFormatter, build_parser, main, verbosity

from .factories import speechlike, talking_clip, write_wav

BAR = "25/25"  # tqdm's count on the last update of a 25-frame clip


@pytest.fixture(scope="module")
def short_clip(media_dir: Path) -> tuple[Path, Path]:
    """1 s (25 frames) of a small talking head, and 1 s of dubbed audio."""
    clip = talking_clip(media_dir / "short.mp4", 1.0, 25, speechlike(1.0), size=256)
    return clip, write_wav(media_dir / "short_dub.wav", speechlike(1.0, seed=5))


def dub_args(clip: tuple[Path, Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "rtdub", "dub", "--video", str(clip[0]), "--audio", str(clip[1]), "-o", str(out)]


def run_on_terminal(cmd: list[str], columns: int = 100) -> tuple[int, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal (stdout on a pipe): exit code and what
    the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    received = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError as e:  # EIO: the last writer closed the terminal
            if e.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    assert proc.stdout is not None
    proc.stdout.read()
    return proc.wait(timeout=60), received.decode("utf-8", "replace")


def test_the_progress_bar_shows_on_a_terminal(tmp_path: Path, short_clip: tuple[Path, Path]) -> None:
    code, terminal = run_on_terminal(dub_args(short_clip, tmp_path / "o.mp4"))
    assert code == 0, terminal
    assert "dub:" in terminal and BAR in terminal and "frame/s" in terminal, terminal
    assert "100%|" in terminal  # the bar itself, sized to the terminal
    assert (tmp_path / "o.mp4").is_file()


def test_no_progress_bar_on_a_pipe_and_verbose_after_the_command_logs_with_data(
    tmp_path: Path, short_clip: tuple[Path, Path]
) -> None:
    out = tmp_path / "o.mp4"
    res = subprocess.run([*dub_args(short_clip, out), "-v"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert BAR not in res.stderr and "%|" not in res.stderr
    # -v after the command: INFO lines, with their extra fields
    assert f"INFO rtdub.dub: dubbed {out}: 25 frames" in res.stderr, res.stderr
    assert f"(output={out} frames=25 no_face=0 wall_s=" in res.stderr, res.stderr


def test_quiet_keeps_the_terminal_without_a_bar(tmp_path: Path, short_clip: tuple[Path, Path]) -> None:
    code, terminal = run_on_terminal([*dub_args(short_clip, tmp_path / "o.mp4"), "-q"])
    assert code == 0, terminal
    assert BAR not in terminal and "%|" not in terminal


def test_a_closed_stdout_is_no_traceback(tmp_path: Path, short_clip: tuple[Path, Path]) -> None:
    """``rtdub dub ... | head -0``: the report cannot be printed; one quiet exit, 141."""
    proc = subprocess.Popen(
        [*dub_args(short_clip, tmp_path / "o.mp4"), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before rtdub writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert (tmp_path / "o.mp4").is_file()  # the work itself was done


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"rtdub {version('rtdub')}"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], 0), (["-v"], 1), (["-vv"], 2), (["--verbose"], 1)],
)
def test_verbose_counts_before_and_after_the_command(flags: list[str], expected: int) -> None:
    rest = ["--video", "v.mp4", "--audio", "a.wav", "-o", "o.mp4"]
    parser = build_parser()
    assert verbosity(parser.parse_args([*flags, "dub", *rest])) == expected
    assert verbosity(parser.parse_args(["dub", *rest, *flags])) == expected
    assert verbosity(parser.parse_args([*flags, "dub", *rest, *flags])) == 2 * expected
    assert verbosity(parser.parse_args([*flags, "eval", "--video", "v.mp4", "--audio", "a.wav"])) == expected


def record(msg: str, **extra: object) -> logging.LogRecord:
    return logging.getLogger("rtdub.stream.scheduler").makeRecord(
        "rtdub.stream.scheduler", logging.WARNING, __file__, 1, msg, (), None, extra=extra
    )


def test_log_lines_keep_their_extra_fields() -> None:
    fmt = ExtraFormatter(LOG_FORMAT)
    assert fmt.format(record("frame late", late_ms=12.3, mode=2)) == (
        "WARNING rtdub.stream.scheduler: frame late (late_ms=12.3 mode=2)"
    )
    assert fmt.format(record("frame late")) == "WARNING rtdub.stream.scheduler: frame late"
    line = fmt.format(record("wrote", path="/tmp/a b.mp4", frames=3, wall_s=1.23456789))
    assert line.endswith("wrote (path='/tmp/a b.mp4' frames=3 wall_s=1.23457)")


def test_extra_fields_come_before_a_traceback() -> None:
    fmt = ExtraFormatter(LOG_FORMAT)
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed", stage="a2l")
        rec.exc_info = sys.exc_info()
    first, *rest = fmt.format(rec).splitlines()
    assert first == "WARNING rtdub.stream.scheduler: failed (stage=a2l)"
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_dub_help_has_an_example_the_backends_and_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dub", "--help"])
    text = capsys.readouterr().out
    assert "examples:\n  rtdub dub --video talk.mp4 --audio dubbed.wav -o dubbed.mp4\n" in text
    assert "--backend {onnx,tensorrt}" in text
    assert "(default: default)" in text  # --model
    assert "(default 2)" in text  # --threads, from the offline preset
    assert "-v, --verbose" in text


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_with_a_default_shows_it(name: str) -> None:
    """Options with a value (not flags) and a default say it in their help, whether their
    text gives it or the help formatter adds it."""
    cmd = commands()[name]
    assert cmd.formatter_class is HelpFormatter
    formatter = HelpFormatter(prog=cmd.prog)
    for action in cmd._actions:
        if action.nargs == 0 or action.default is None or action.help == argparse.SUPPRESS:
            continue
        text = formatter._get_help_string(action) or ""
        assert "default" in text, (name, action.option_strings, text)
    cmd.format_help()  # every %(default)s expands
