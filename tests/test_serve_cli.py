"""``rtdub serve`` as a process: refusal without a token, the token from a file or the
environment, and a clean, prompt exit on SIGTERM with a live WHIP session and a stalled upload
(every peer closed, no task left behind)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from rtdub.cli.main import main
from rtdub.stream.mediatracks import FramesTrack, PcmTrack
from rtdub.stream.webrtc import ice_configuration, offer_to, restrict_host_addresses

from .factories import speechlike
from .streamkit import portrait_frames


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    restrict_host_addresses(["127.0.0.1"])
    yield
    restrict_host_addresses(None)


def test_serve_refuses_a_public_address_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--token" in err[0]
    assert main(["serve", "--budget-ms", "-5"]) == 2


def _command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


async def _wait_stats(base: str, token: str, cond: Callable[[dict[str, Any]], bool], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        while time.monotonic() < end:
            async with http.get(f"{base}/stats") as r:
                assert r.status == 200
                stats = await r.json()
            if cond(stats):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"the server's stats never showed it: {stats}")


async def _wait_frames(base: str, timeout: float, token: str) -> None:
    def frames(stats: dict[str, Any]) -> bool:
        sessions = stats["sessions"]
        return bool(sessions) and sessions[0]["input_frames"] > 5

    await _wait_stats(base, token, frames, timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_peers_and_leaves_no_task(sig: signal.Signals, tmp_path: Path) -> None:
    token = "t0ken-from-a-file"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RTDUB_TOKEN", None)
    args = ["-m", "rtdub", "-v", "serve", "--port", "0", "--ice-host", "127.0.0.1", "--threads", "1"]
    args += ["--token-file", str(tmp_path / "token")]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    pub = RTCPeerConnection(ice_configuration())
    stalled: asyncio.StreamWriter | None = None
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        assert token not in _command_line(proc.pid)  # what ps shows
        base = f"http://127.0.0.1:{m.group(1)}"
        pub.addTransceiver(FramesTrack(portrait_frames(), 25, loop=True), direction="sendonly")
        pub.addTransceiver(PcmTrack(speechlike(1.0), loop=True), direction="sendonly")
        await offer_to(f"{base}/whip", pub, token=token)
        await _wait_frames(base, 20, token)
        # an upload that declares a chunked body and stalls: shutdown must not wait for it
        reader, stalled = await asyncio.open_connection("127.0.0.1", int(m.group(1)))
        stalled.write(
            f"POST /uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n".encode()
        )
        await stalled.drain()
        await _wait_stats(base, token, lambda s: s["uploads_in_flight"] == 1)
        proc.send_signal(sig)
        # aiohttp alone would wait 60 s for the upload's handler; the bound only guards a hang
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the upload's connection closed
    finally:
        if stalled is not None:
            stalled.close()
        await pub.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = line + out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err[-2000:]
    assert "stopped" in out
    assert "session closed" in err  # the peer's session was closed by the shutdown
    assert "leftover" not in err and "Traceback" not in err, err[-3000:]


def test_dub_socket_addresses() -> None:
    from rtdub.cli.stream import parse_socket
    from rtdub.exceptions import InputError

    assert parse_socket("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_socket("[::1]:9000") == ("::1", 9000)
    assert parse_socket(":9000") == ("127.0.0.1", 9000)
    assert parse_socket("/run/dub.sock") == "/run/dub.sock"
    with pytest.raises(InputError):
        parse_socket("localhost")


def test_join_with_a_bad_socket_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["join", "--whep", "http://127.0.0.1:9/whep", "--whip", "http://127.0.0.1:9/whip", "--dub-socket", "x"])
    assert code == 2 and "--dub-socket" in capsys.readouterr().err


def test_serve_token_comes_from_the_flag_a_file_or_the_environment(tmp_path: Path) -> None:
    from rtdub.cli.stream import serve_token
    from rtdub.exceptions import InputError

    env = {"RTDUB_TOKEN": " from-env\n"}
    (tmp_path / "t").write_text("from-file\n")
    assert serve_token("from-flag", None, env) == "from-flag"
    assert serve_token(None, tmp_path / "t", env) == "from-file"
    assert serve_token(None, None, env) == "from-env"
    assert serve_token(None, None, {}) is None
    (tmp_path / "empty").write_text(" \n")
    for path, problem in ((tmp_path / "empty", "is empty"), (tmp_path / "missing", "cannot read")):
        with pytest.raises(InputError, match=problem) as exc:
            serve_token(None, path, env)
        assert exc.value.path == "--token-file"
    with pytest.raises(InputError, match="RTDUB_TOKEN"):
        serve_token(None, None, {"RTDUB_TOKEN": ""})


def test_serve_takes_its_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    public = ["serve", "--host", "0.0.0.0", "--port", "0", "--connect-timeout-s", "0"]
    monkeypatch.delenv("RTDUB_TOKEN", raising=False)
    assert main(public) == 2  # no token: refused for the address
    assert "--token" in capsys.readouterr().err
    monkeypatch.setenv("RTDUB_TOKEN", "secret")
    assert main(public) == 2  # the token is there: the next check is the one that fails
    err = capsys.readouterr().err
    assert "--connect-timeout-s" in err and "--token" not in err
    (tmp_path / "t").write_text("")
    assert main(["serve", "--token-file", str(tmp_path / "t")]) == 2
    assert "--token-file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # one source on the command line
        main(["serve", "--token", "a", "--token-file", str(tmp_path / "t")])
    assert exc.value.code == 2
    assert main(["serve", "--read-timeout-s", "-1"]) == 2
    assert "--read-timeout-s" in capsys.readouterr().err
