"""Atomic output: a file is either its old self or complete, never half-written.

The data goes to a temporary file in the same folder (so the rename stays on one file
system), is flushed to disk, then renamed over the target. Parent folders are created.

Modes follow what a plain ``open(path, "w")`` would give: a new output gets 0666 less the
umask, a file that is replaced keeps its own mode. :func:`mkstemp` and :func:`replace` give
the same to writers that let a library write the temporary file (rtdub.media's video and WAV).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def mkstemp(dir: str | os.PathLike[str], prefix: str, suffix: str) -> tuple[int, str]:
    """A new, empty file ``dir/<prefix><random><suffix>`` opened for writing: (descriptor,
    path), as :func:`tempfile.mkstemp`, but created with mode 0666 less the umask, as any new
    file (mkstemp's 0600 would make every output private)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(dir, f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {dir}")


def replace(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename ``tmp`` over ``target``; a file already at ``target`` passes its mode on."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        pass
    else:
        os.chmod(tmp, mode)
    os.replace(tmp, target)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp(out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def writable_dir(path: str | os.PathLike[str]) -> str | None:
    """Create ``path``'s parent folder; None when a file can be written there, else why not
    (checked before a long run, so that its result is not lost at the end)."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create {parent}: {e.strerror or e}"
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable"
    return None


__all__ = ["mkstemp", "replace", "writable_dir", "write_bytes", "write_text"]
