"""Atomic text output: a file is either its old self or complete, never half-written.

The text goes to a temporary file in the same folder (so the rename stays on one file
system), is flushed to disk, then renamed over the target. Parent folders are created.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
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


__all__ = ["writable_dir", "write_bytes", "write_text"]
