"""Interop with software written elsewhere, from Debian's packages, all on loopback:

- GStreamer's ``simple-whip-client`` (``whip-client``) publishes a generated talking clip to
  ``rtdub serve``'s ``/whip`` with a Bearer token, and rtdub dubs it (the face only). Debian's
  binary cannot start here as is (libsoup2 + libsoup3 in one process): it runs with a stand-in
  for libgupnp-igd, see ``tests/interop_tools.py``;
- ``rtdub join`` pulls rtdub serve's ``/whep`` and publishes its dubbed stream over WHIP to
  ``janus`` through ``simple-whip-server`` (Debian's .deb unpacked, its node dependencies from
  npm: ``.ci/provision-simple-whip-server``), and janus' Admin API shows the media it received;
- headless Chromium opens the page with a fake camera (a generated ``.y4m``) and decodes the
  dubbed stream, read back through the DevTools protocol.

Each test skips, with the reason, when its packages are missing (``.ci/run`` provisions them
when it can).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import av
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from rtdub.stream.mediatracks import FramesTrack, PcmTrack
from rtdub.stream.scheduler import Rendered
from rtdub.stream.server import DubServer, ServeConfig
from rtdub.stream.session import StreamConfig
from rtdub.stream.webrtc import delete_resource, ice_configuration, offer_to

from .factories import speechlike
from .interop_tools import JanusWhip, Unavailable, whip_client_env
from .streamkit import make_pipeline, mouth_mask, portrait_frames

pytestmark = pytest.mark.slow


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture(autouse=True)
def _loopback(loopback_only: None) -> None:
    """Every test here keeps ICE on 127.0.0.1 (fixture in tests/streamkit.py)."""


def write_y4m(path: Path, frames: list[np.ndarray] | tuple[np.ndarray, ...], fps: int = 25) -> Path:
    """4:2:0 YUV4MPEG2, the format Chromium's fake capture and GStreamer's y4mdec read."""
    h, w = frames[0].shape[:2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for img in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def write_i420(path: Path, frames: list[np.ndarray]) -> Path:
    """Headerless planar 4:2:0 frames, for GStreamer's rawvideoparse."""
    with path.open("wb") as f:
        for img in frames:
            f.write(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def vga_frames(n: int) -> list[np.ndarray]:
    out = []
    for img in portrait_frames(n):
        face = cv2.resize(np.asarray(img), (480, 480), interpolation=cv2.INTER_AREA)
        out.append(np.pad(face, ((0, 0), (80, 80), (0, 0)), mode="edge"))
    return out


async def _stats(base: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/stats") as r:
        data: dict[str, object] = await r.json()
        return data


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def test_gstreamer_simple_whip_client_publishes_to_rtdub(tmp_path: Path) -> None:
    _need("whip-client", "gst-inspect-1.0")
    try:
        env = whip_client_env(tmp_path)
    except Unavailable as exc:
        pytest.skip(str(exc))
    token = "whip-interop"
    server = DubServer(ServeConfig(port=0, token=token, stream=StreamConfig(budget_ms=150)), make_pipeline)
    await server.start()
    clip = write_i420(tmp_path / "clip.i420", vga_frames(50))
    # raw frames: multifilesrc's loop restarts the byte stream, which y4mdec does not take (it
    # stops after one pass) but rawvideoparse does
    video = (
        f"multifilesrc location={clip} loop=true ! rawvideoparse width=640 height=480 format=i420 "
        "framerate=25/1 ! identity sync=true ! queue ! vp8enc deadline=1 cpu-used=8 ! rtpvp8pay pt=96 ssrc=1 ! "
        "queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96"
    )
    audio = (
        "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! "
        "rtpopuspay pt=100 ssrc=2 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100"
    )
    base = f"http://127.0.0.1:{server.port}"
    proc = await asyncio.create_subprocess_exec(
        "whip-client", "-n", "-u", f"{base}/whip", "-t", token, "-V", video, "-A", audio, "-l", "5", "-o",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    output = asyncio.create_task(proc.stdout.read())
    try:
        for _ in range(200):
            await asyncio.sleep(0.1)
            if proc.returncode is not None or any(p.session.input_frames >= 10 for p in server.peers.values()):
                break
        assert server.peers, f"no WHIP session: {(await _stop_output(proc, output))[-3000:]}"
        (peer,) = server.peers.values()
        session = peer.session
        assert session.input_frames >= 10, f"no media: {(await _stop_output(proc, output))[-3000:]}"
        probed: list[tuple[np.ndarray, np.ndarray, Rendered]] = []

        def probe(src: av.VideoFrame, out: av.VideoFrame, r: Rendered) -> None:
            probed.append((src.to_ndarray(format="rgb24"), out.to_ndarray(format="rgb24"), r))

        session.probe = probe
        # nobody plays the WHIP session back: pull the dubbed track here
        try:
            for _ in range(30):
                frame = await asyncio.wait_for(session.video.recv(), 10)
                assert (frame.width, frame.height) == (640, 480)
        except MediaStreamError:
            log = await _stop_output(proc, output)
            raise AssertionError(f"the dubbed track ended: {session.stats()}\n{log[-3000:]}") from None
        assert proc.returncode is None, (await _stop_output(proc, output))[-3000:]
        stats = session.stats()
        assert session.input_frames >= 30 and stats["scheduler"]["faces"] > 0, stats
        # rtdub dubbed the face of GStreamer's stream, and changed nothing else
        dubbed = 0
        for src, out, r in probed:
            changed = np.any(src != out, axis=-1)
            if r.region is None:
                assert not changed.any()
                continue
            dubbed += 1
            assert not (changed & ~mouth_mask(src.shape, r.region, 0.0)).any()
            inside = np.abs(src.astype(np.int16) - out.astype(np.int16)).max(-1)[mouth_mask(src.shape, r.region)]
            assert (inside > 8).sum() > 100
        assert dubbed >= 20, stats
    finally:
        log = await _stop_output(proc, output)
        await server.aclose()
    # the offer carried loopback candidates only, and GStreamer saw DTLS and the peer connect
    candidates = [ln for ln in log.splitlines() if ln.startswith("a=candidate:")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates), candidates
    assert "DTLS connected" in log and "PeerConnection connected" in log, log[-3000:]
    assert "[ERR]" not in log, log[-3000:]


async def _stop_output(proc: asyncio.subprocess.Process, output: asyncio.Task[bytes]) -> str:
    await _stop(proc)
    return (await output).decode(errors="replace")


async def test_join_publishes_to_janus_through_simple_whip_server(server: DubServer, tmp_path: Path) -> None:
    """``rtdub join`` (the command, in a subprocess) pulls rtdub serve's /whep, fed by an aiortc
    publisher, and publishes the dubbed stream to simple-whip-server, which hands it to janus'
    VideoRoom; janus' Admin API shows the media it received."""
    try:
        jw = JanusWhip(tmp_path)
    except Unavailable as exc:
        pytest.skip(str(exc))
    src = f"http://127.0.0.1:{server.port}"
    pub = RTCPeerConnection(ice_configuration())
    pub.addTransceiver(FramesTrack(list(portrait_frames()), 25, loop=True), direction="sendonly")
    pub.addTransceiver(PcmTrack(speechlike(1.0) * 3, loop=True), direction="sendonly")
    async with jw:
        ingest = await offer_to(f"{src}/whip", pub)
        join = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtdub.cli.main", "join", "--whep", f"{src}/whep", "--whip", jw.whip_url,
            "--token", jw.token, "--ice-host", "127.0.0.1", "--budget-ms", "150", "--threads", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert join.stdout is not None
        output = asyncio.create_task(join.stdout.read())
        try:
            got: dict[str, int] = {}
            for _ in range(120):
                await asyncio.sleep(0.5)
                if join.returncode is not None:
                    break
                got = await jw.received()
                if got.get("video_packets", 0) >= 100 and got.get("audio_packets", 0) >= 50:
                    break
            log = "" if join.returncode is None else (await output).decode(errors="replace")
            assert got.get("video_packets", 0) >= 100, f"{got}\n{log[-2000:]}\n{jw.logs()}"
            assert got.get("audio_packets", 0) >= 50, got
            print("janus received", got)
            (endpoint,) = await jw.endpoints()
            assert endpoint["enabled"] is True  # simple-whip-server's WHIP session is live
            (handle,) = [h for h in await jw.handles() if h.get("plugin") == "janus.plugin.videoroom"]
            assert handle["flags"]["ready"] is True and handle["plugin_specific"]["type"] == "publisher", handle
            (origin,) = server.peers.values()
            assert len(origin.viewers) == 1  # rtdub join plays the source over WHEP
            assert origin.session.stats()["scheduler"]["faces"] > 0
        finally:
            await _stop(join)
            log = (await output).decode(errors="replace")
            ended = await delete_resource(ingest.resource)
            await pub.close()
        assert ended == 200
        assert join.returncode == 0, log[-3000:]
        assert len(origin.viewers) == 0  # rtdub join DELETEd its WHEP resource on SIGINT
        for _ in range(50):
            if not (await jw.endpoints())[0]["enabled"]:
                break
            await asyncio.sleep(0.1)
        assert (await jw.endpoints())[0]["enabled"] is False  # and its WHIP resource


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _devtools_eval(port: int, expression: str) -> object:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"http://127.0.0.1:{port}/json") as r:
                    targets = await r.json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no DevTools page target")
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            await ws.send_json(
                {"id": 1, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": True}}
            )
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == 1:
                    return data["result"]["result"].get("value")
    return None


async def test_headless_chromium_page_gets_the_dubbed_stream(server: DubServer, tmp_path: Path) -> None:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if chrome is None:
        pytest.skip("not installed: chromium")
    clip = write_y4m(tmp_path / "camera.y4m", vga_frames(50))
    devtools = _free_port()
    url = f"http://127.0.0.1:{server.port}/?autostart=1"
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}", f"--remote-debugging-port={devtools}",
        f"--user-data-dir={tmp_path / 'profile'}", "--webrtc-ip-handling-policy=default",
        url,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        chrome, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        result: dict[str, object] = {}
        for _ in range(60):
            await asyncio.sleep(0.5)
            value = await _devtools_eval(devtools, "JSON.stringify(window.rtdubStats)")
            result = json.loads(str(value)) if value else {}
            decoded = result.get("framesDecoded", 0)
            if isinstance(decoded, int) and decoded >= 25 and result.get("mean") is not None:
                break
        assert result.get("state") == "connected", result
        assert isinstance(result["framesDecoded"], int) and result["framesDecoded"] >= 25, result
        assert (result["width"], result["height"]) == (640, 480)
        mean = result["mean"]
        assert isinstance(mean, float | int) and 20 < mean < 235  # a real picture, not black
        (peer,) = server.peers.values()
        st = peer.session.stats()
        assert st["scheduler"]["faces"] > 0  # the browser's camera face was dubbed
    finally:
        await _stop(proc)
