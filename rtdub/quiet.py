"""Silence native libraries (mediapipe's glog/TFLite banners) that write straight to fd 2."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# the terminal behind fd 2 while install_native_log_filter has put a pipe there (which hides
# it from sys.stderr.isatty()): its descriptor, a duplicate; None when fd 2 is not filtered
_filtered_terminal: int | None = None
_filtered = False


def stderr_is_terminal() -> bool:
    """Whether what is written to stderr reaches a terminal (for a progress bar), also while
    :func:`install_native_log_filter` routes fd 2 through its pipe."""
    if _filtered:
        return _filtered_terminal is not None
    try:
        return sys.stderr.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def stderr_columns() -> int | None:
    """The width of the terminal behind stderr, None when it is not a terminal."""
    if _filtered:
        fd = _filtered_terminal
    else:
        try:
            fd = sys.stderr.fileno() if sys.stderr.isatty() else None
        except (AttributeError, OSError, ValueError):
            fd = None
    if fd is None:
        return None
    try:
        return os.get_terminal_size(fd).columns or None  # 0: a terminal that never said its size
    except OSError:
        return None


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real fd (pytest capture): nothing to do
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


_NATIVE_LINE = re.compile(
    rb"^(?:[WIEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|INFO: Created TensorFlow Lite|"
    rb"WARNING: All log messages before absl::InitializeLog)"
)
_MAYBE_NATIVE = re.compile(rb"^(?:[WIEF]\d|INFO|WARN)")


def install_native_log_filter() -> bool:
    """Route fd 2 through a pipe and drop the log lines native libraries print (absl/glog
    lines from mediapipe's worker threads arrive at unpredictable times, so no scoped
    redirection catches them all). Everything else reaches the terminal unchanged, in order.
    For command-line entry points only; returns False when stderr is not a real descriptor.
    :func:`stderr_is_terminal` still tells whether the output reaches a terminal."""
    global _filtered, _filtered_terminal
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    sys.stderr.flush()
    saved = os.dup(fd)
    _filtered, _filtered_terminal = True, saved if os.isatty(saved) else None
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)

    def forward(data: bytes) -> None:
        try:
            os.write(saved, data)
        except OSError:
            pass

    def pump() -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(r, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not _NATIVE_LINE.match(line):
                    forward(line + b"\n")
            if buf and not _MAYBE_NATIVE.match(buf):  # partial line (a progress bar): pass it on
                forward(buf)
                buf = b""
        if buf and not _NATIVE_LINE.match(buf):
            forward(buf)
        os.close(r)

    thread = threading.Thread(target=pump, name="rtdub-stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        global _filtered, _filtered_terminal
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, fd)  # the pipe loses its last writer: the pump sees EOF and drains
        _filtered, _filtered_terminal = False, None
        thread.join(timeout=2.0)

    atexit.register(restore)
    return True
