"""rtdub/atomic.py: complete files or the old ones, never half-written; and the early
writability check that long benchmark runs make before they start."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from rtdub import atomic, media
from rtdub.measure.loopbench import main as loopbench_main


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Sets the process umask for one test; the old one comes back after it."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    try:
        yield set_umask
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def write_video(path: Path) -> Path:
    with media.VideoWriter(path, 25, 32, 32) as w:
        for i in range(3):
            w.write(np.full((32, 32, 3), 40 * i, np.uint8))
    return path


def write_wav(path: Path) -> Path:
    return media.write_wav(path, np.zeros(1600, np.float32), 16000)


WRITERS: dict[str, Callable[[Path], Path]] = {
    "text": lambda p: atomic.write_text(p, "x\n"),
    "bytes": lambda p: atomic.write_bytes(p, b"x"),
    "video": write_video,
    "wav": write_wav,
}


def test_writes_creates_parents_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "r.json"
    assert atomic.write_text(out, "{}\n") == out
    assert out.read_text() == "{}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_a_new_output_gets_0666_less_the_umask(
    tmp_path: Path, umask: Callable[[int], None], writer: str, mask: int
) -> None:
    """As ``open(path, "w")`` would: not mkstemp's private 0600."""
    umask(mask)
    out = WRITERS[writer](tmp_path / f"new.{writer}")
    assert mode(out) == oct(0o666 & ~mask)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("old_mode", [0o644, 0o600, 0o664, 0o640])
def test_an_overwritten_output_keeps_its_mode(
    tmp_path: Path, umask: Callable[[int], None], writer: str, old_mode: int
) -> None:
    umask(0o077)  # would give 0600 to a new file: the old file's mode must win
    out = tmp_path / f"old.{writer}"
    out.write_bytes(b"old")
    out.chmod(old_mode)
    assert WRITERS[writer](out) == out
    assert out.read_bytes() != b"old"
    assert mode(out) == oct(old_mode)


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "r.txt"
    atomic.write_text(out, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic.write_text(out, "new \ud800")  # a lone surrogate cannot be encoded: fails mid-write
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_writable_dir_reports_a_blocked_path(tmp_path: Path) -> None:
    assert atomic.writable_dir(tmp_path / "new" / "x.json") is None
    assert (tmp_path / "new").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    problem = atomic.writable_dir(blocker / "x.json")  # a file where the folder should be
    assert problem is not None and "cannot create" in problem


def test_loopbench_refuses_an_unwritable_out_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert loopbench_main(["--seconds", "600", "--out", str(blocker / "r.json")]) == 2  # returns at once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("loopbench: error: --out:")
