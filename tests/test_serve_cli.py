"""``rtdub serve`` as a process: refusal without a token, and a clean exit on SIGTERM with a
live WHIP session (every peer closed, no task left behind)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Iterator

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


async def _wait_frames(base: str, timeout: float) -> dict[str, object]:
    end = time.monotonic() + timeout
    stats: dict[str, object] = {}
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            async with http.get(f"{base}/stats") as r:
                stats = await r.json()
            sessions = stats["sessions"]
            assert isinstance(sessions, list)
            if sessions and sessions[0]["input_frames"] > 5:
                return stats
            await asyncio.sleep(0.2)
    raise AssertionError(f"no frames reached the server: {stats}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_peers_and_leaves_no_task(sig: signal.Signals) -> None:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    args = ["-m", "rtdub", "-v", "serve", "--port", "0", "--ice-host", "127.0.0.1", "--threads", "1"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    pub = RTCPeerConnection(ice_configuration())
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        base = f"http://127.0.0.1:{m.group(1)}"
        pub.addTransceiver(FramesTrack(portrait_frames(), 25, loop=True), direction="sendonly")
        pub.addTransceiver(PcmTrack(speechlike(1.0), loop=True), direction="sendonly")
        await offer_to(f"{base}/whip", pub)
        await _wait_frames(base, 20)
        proc.send_signal(sig)
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
    finally:
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
