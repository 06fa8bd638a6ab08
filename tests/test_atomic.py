"""rtdub/atomic.py: complete files or the old ones, never half-written; and the early
writability check that long benchmark runs make before they start."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtdub import atomic
from rtdub.measure.loopbench import main as loopbench_main


def test_writes_creates_parents_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "r.json"
    assert atomic.write_text(out, "{}\n") == out
    assert out.read_text() == "{}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


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
