"""``rtdub dub``'s paths: an output that is an input (the same path, a symbolic or a hard
link) or that cannot be written is refused before any work, with one line and exit code 2,
the inputs untouched and nothing left behind; a disk that fills during the run ends in one
line (exit 1) with no partial file."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest

from rtdub import media
from rtdub.cli.main import main
from rtdub.dub import output_problem
from rtdub.exceptions import OutputError

from .factories import speechlike, talking_clip, write_wav


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A short clip and its dubbed audio, private to the test (some tests link to them)."""
    video = talking_clip(tmp_path / "in" / "talk.mp4", seconds=0.4, audio=None, size=128)
    audio = write_wav(tmp_path / "in" / "dub.wav", speechlike(0.4))
    return video, audio


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dub(video: Path, audio: Path, out: Path, *extra: str) -> int:
    return main(["dub", "--video", str(video), "--audio", str(audio), "-o", str(out), "-q", *extra])


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rtdub: error: ")
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or ".rtdub-probe" in p.name)


@pytest.mark.parametrize("which", ["video", "audio", "hard link to the video", "symbolic link to the audio"])
def test_output_that_is_an_input_is_refused(
    inputs: tuple[Path, Path], which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = inputs
    before = digest(video), digest(audio)
    out = {"video": video, "audio": audio}.get(which)
    if out is None:
        out = video.parent / "alias.mp4"
        if which.startswith("hard"):
            os.link(video, out)
        else:
            out.symlink_to(audio)
    assert dub(video, audio, out) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"{out}: -o is the --{which.split()[-1]} input" in line and "refusing to overwrite" in line
    assert (digest(video), digest(audio)) == before
    assert leftovers(video.parent) == []


def test_the_same_path_spelled_differently_is_refused(
    inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = inputs
    before = digest(video)
    out = video.parent / "nowhere" / ".." / video.name  # resolves to the input
    assert dub(video, audio, out) == 2
    assert "-o is the --video input" in one_line_error(capsys.readouterr().err)
    assert digest(video) == before


def test_compare_that_is_an_input_or_the_output_is_refused(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = inputs
    before = digest(video)
    out = tmp_path / "o.mp4"
    assert dub(video, audio, out, "--compare", str(video)) == 2
    assert "--compare is the --video input" in one_line_error(capsys.readouterr().err)
    assert dub(video, audio, out, "--compare", str(out)) == 2
    assert "--compare is the same file as -o" in one_line_error(capsys.readouterr().err)
    assert digest(video) == before and not out.exists()


def test_output_that_is_a_directory_or_not_a_file_is_refused(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = inputs
    folder = tmp_path / "folder"
    folder.mkdir()
    assert dub(video, audio, folder) == 2
    assert f"{folder}: is a directory" in one_line_error(capsys.readouterr().err)
    assert list(folder.iterdir()) == [] and leftovers(tmp_path) == []
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    assert dub(video, audio, fifo) == 2
    assert f"{fifo}: exists and is not a regular file" in one_line_error(capsys.readouterr().err)


def test_a_file_in_the_way_of_the_parent_is_refused(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = inputs
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "o.mp4"
    assert dub(video, audio, out) == 2
    assert f"{out}: cannot create {out.parent}" in one_line_error(capsys.readouterr().err)


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    """The documented choice: like ``mkdir -p``, checked (and created) before any work."""
    out = tmp_path / "a" / "b" / "o.mp4"
    assert output_problem(out) is None
    assert out.parent.is_dir() and list(out.parent.iterdir()) == []  # the write probe left nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not apply to root")
def test_folder_without_write_permission_is_refused(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = inputs
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert dub(video, audio, locked / "o.mp4") == 2
        assert f"{locked} is not writable" in one_line_error(capsys.readouterr().err)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def _can_mount_tmpfs() -> bool:
    """Whether ``unshare -m`` can mount a tmpfs here (root in a private mount namespace)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d; rmdir $d"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return res.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace")


def run_on_tmpfs(mount: Path, options: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m rtdub ARGS`` with a tmpfs mounted (``options``) at ``mount``, in a private
    mount namespace: the mount goes away with the process."""
    cmd = " ".join([sys.executable, "-m", "rtdub", *args])
    script = f"mount -t tmpfs -o {options} tmpfs {mount} && exec {cmd}"
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300, check=False
    )


@needs_tmpfs
def test_read_only_file_system_is_refused(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    video, audio = inputs
    mount = tmp_path / "ro"
    mount.mkdir()
    res = run_on_tmpfs(mount, "ro,size=1m", "dub", "--video", str(video), "--audio", str(audio), "-o", f"{mount}/o.mp4")
    assert res.returncode == 2, res.stderr
    line = one_line_error(res.stderr)
    assert f"{mount}/o.mp4: {mount} is on a read-only file system" in line


@needs_tmpfs
def test_disk_full_during_the_run_is_one_line(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """A real full disk: the output folder is a 64 kB tmpfs; the output needs more."""
    video, audio = inputs
    long_audio = write_wav(tmp_path / "long.wav", speechlike(4.0))
    mount = tmp_path / "small"
    mount.mkdir()
    res = run_on_tmpfs(
        mount, "size=64k", "dub", "--video", str(video), "--audio", str(long_audio), "-o", f"{mount}/o.mp4", "-q"
    )
    assert res.returncode == 1, res.stderr
    line = one_line_error(res.stderr)
    assert f"{mount}/o.mp4: cannot write (no space left on the device)" in line
    assert "Traceback" not in res.stderr


class FillingDisk:
    """An output container whose disk is full after ``room`` packets: ``mux`` raises ENOSPC
    as PyAV does (av.error.OSError is an OSError with its errno)."""

    def __init__(self, inner: av.container.OutputContainer, room: int) -> None:
        self.inner = inner
        self.room = room

    def mux(self, packets: av.Packet | Sequence[av.Packet]) -> None:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= 1
        self.inner.mux(packets)

    def close(self) -> None:
        self.inner.close()


class FillingWriter(media.VideoWriter):
    """The real writer on a disk that fills after 3 packets."""

    def _start(self, *args: object, **kwargs: object) -> None:
        super()._start(*args, **kwargs)  # type: ignore[arg-type]
        self._c = FillingDisk(self._c, room=3)  # type: ignore[assignment]


def test_writer_turns_a_full_disk_into_an_output_error(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    rng = np.random.default_rng(0)
    with pytest.raises(OutputError, match=r"o\.mp4: cannot write \(no space left on the device\) after \d+ frames"):
        with FillingWriter(out, 25, 64, 64) as w:
            for _ in range(50):
                w.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []  # no output, no .part


def test_dub_on_a_full_disk_is_one_line_and_leaves_nothing(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = inputs
    monkeypatch.setattr(media, "VideoWriter", FillingWriter)
    out_dir = tmp_path / "out"
    assert dub(video, audio, out_dir / "o.mp4", "--compare", str(out_dir / "cmp.mp4")) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "cannot write (no space left on the device)" in line
    assert list(out_dir.iterdir()) == []  # neither output nor compare, no .part
