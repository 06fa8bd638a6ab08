"""SIGTERM (``timeout``, systemd, container runtimes) ends ``rtdub dub`` as Ctrl-C does: the
partial output and the frame spool are removed, one line is printed, the exit code is 143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtdub.cli.dub import EXIT_TERMINATED, Terminated, sigterm_raises

from .factories import speechlike, write_wav

# onnxruntime's telemetry keeps a session file (".ses") in the temporary folder: not rtdub's
FOREIGN = {".ses"}


def open_under(pid: int, folder: Path) -> list[str]:
    """The files under ``folder`` that process ``pid`` holds open (unlinked ones included)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder) + "/"):
            found.append(target)
    return found


def test_sigterm_mid_run_removes_the_partial_output_and_the_spool(tmp_path: Path, talking_clip: Path) -> None:
    audio = write_wav(tmp_path / "long.wav", speechlike(30.0, seed=5))  # loops over the 2 s video: spooled
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "dubbed.mp4"
    cmd = [sys.executable, "-m", "rtdub", "dub", "--video", str(talking_clip), "--audio", str(audio), "-o", str(out)]
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(cmd + ["-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:  # mid-run: encoded frames reach the partial output, the spool is open in TMPDIR
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not start writing"
            parts = list(out.parent.glob(".*.part.mp4")) if out.parent.exists() else []
            if parts and parts[0].stat().st_size > 50_000 and open_under(proc.pid, tmpdir):
                break
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_TERMINATED, err
    assert time.monotonic() - started < 30  # ended on the signal, not at the end of 30 s of audio
    assert err.strip().splitlines()[-1] == "rtdub: terminated" and "Traceback" not in err, err
    assert list(out.parent.iterdir()) == []  # no output, no .part
    assert [p.name for p in tmpdir.iterdir() if p.name not in FOREIGN] == []  # no spool, nothing else


def test_sigterm_raises_terminated_once_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with sigterm_raises():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises as soon as the signal is delivered
    assert signal.getsignal(signal.SIGTERM) == before
    assert issubclass(Terminated, KeyboardInterrupt)  # every Ctrl-C cleanup path applies
