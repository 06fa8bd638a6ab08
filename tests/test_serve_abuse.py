"""``rtdub serve`` against clients that misbehave: offers that never connect, uploads whose
audio would exhaust memory, bodies that stall, JSON nested to exhaust the stack, and the token's
accepted forms. ICE stays on loopback (tests/streamkit.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtdub.audio import SAMPLE_RATE
from rtdub.backends.base import BackendConfig
from rtdub.backends.onnx import OnnxBackend
from rtdub.face.tracker import FaceTracker
from rtdub.render.pipeline import DubPipeline, PipelineConfig
from rtdub.stream.dubsources import AudioTooLong, decode_audio
from rtdub.stream.mediatracks import FramesTrack
from rtdub.stream.server import DubServer, ServeConfig
from rtdub.stream.session import StreamConfig, warm_up
from rtdub.stream.webrtc import ice_configuration

from .streamkit import Receiver, bundle, portrait_frames


@pytest.fixture(autouse=True)
def _loopback(loopback_only: None) -> None:
    """Every test here keeps ICE on 127.0.0.1."""


async def _until(cond: Callable[[], bool], what: str, bound: float = 60.0) -> None:
    """Wait for ``cond`` (polling); ``bound`` only guards against a hang."""
    for _ in range(int(bound / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


# --- 9: offers that never connect ------------------------------------------------------


class ClosingPipeline(DubPipeline):
    """A real pipeline that records its close (the session's slot includes its pipeline)."""

    closed: list[ClosingPipeline] = []

    def close(self) -> None:
        ClosingPipeline.closed.append(self)
        super().close()


def _pipeline() -> DubPipeline:
    pipe = ClosingPipeline(bundle(), OnnxBackend(bundle(), BackendConfig(threads=1)), FaceTracker(), PipelineConfig())
    warm_up(pipe)
    return pipe


async def _abandoned_offer(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    """Post an offer and close the client without applying the answer: it never connects."""
    pc = RTCPeerConnection(ice_configuration())
    pc.addTrack(FramesTrack(list(portrait_frames(5)), 25))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(url, json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
            await r.read()
            return r
    finally:
        await pc.close()


async def test_offers_that_never_connect_free_their_slots_at_the_deadline() -> None:
    ClosingPipeline.closed.clear()
    config = ServeConfig(port=0, stream=StreamConfig(budget_ms=150), max_sessions=2, connect_timeout_s=3.0)
    srv = DubServer(config, _pipeline)
    await srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    pc = RTCPeerConnection(ice_configuration())
    rx = Receiver()
    try:
        async with aiohttp.ClientSession() as http:
            # posted together, so that both still hold their slots below (each one's deadline
            # runs from its own answer)
            posts = await asyncio.gather(*(_abandoned_offer(http, f"{base}/offer") for _ in range(2)))
            assert [r.status for r in posts] == [200, 200]
            abandoned = list(srv.peers.values())
            # every slot is held: a real user is refused
            async with http.post(f"{base}/offer", json={"sdp": "v=0", "type": "offer"}) as r:
                assert r.status == 503 and "too many sessions" in await r.text()
            await _until(lambda: not srv.peers, "the abandoned sessions closed")
            assert all(p.closed.is_set() and p.pc.connectionState == "closed" for p in abandoned)
            assert len(ClosingPipeline.closed) == 2  # their pipelines were closed too
            async with http.get(f"{base}/stats") as r:
                stats = await r.json()
            assert stats["connect_timeouts"] == 2 and stats["sessions"] == []

            # a real client now gets in (a longer deadline: a loaded machine may take seconds to
            # connect) and keeps its session past the deadline
            srv.config = dataclasses.replace(config, connect_timeout_s=5.0)
            pc.addTrack(FramesTrack(list(portrait_frames(25)), 25, loop=True))
            pc.on("track", rx.attach)
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(f"{base}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            peer = srv.peers[answer["session"]]
            assert await peer.connect_within(30.0)
            await rx.wait_for(5, timeout=30)
            assert len(rx.frames) >= 5
            await asyncio.sleep(srv.config.connect_timeout_s + 0.5)  # past the deadline: still there
            assert srv.peers == {peer.id: peer} and srv.connect_timeouts == 2

            # a WHEP viewer that never connects is dropped at the deadline
            srv.config = config
            viewer = RTCPeerConnection(ice_configuration())
            viewer.addTransceiver("video", direction="recvonly")
            await viewer.setLocalDescription(await viewer.createOffer())
            headers = {"Content-Type": "application/sdp"}
            async with http.post(f"{base}/whep", data=viewer.localDescription.sdp, headers=headers) as r:
                assert r.status == 201
            assert len(peer.viewers) == 1
            # the client never applies the answer (closing it could end the server's side by
            # another path first, on a loaded host): only the deadline can drop this viewer
            try:
                await _until(lambda: not peer.viewers, "the abandoned viewer dropped")
            finally:
                await viewer.close()
            async with http.get(f"{base}/stats") as r:
                stats = await r.json()
            assert stats["viewer_connect_timeouts"] == 1 and len(stats["sessions"]) == 1
    finally:
        await rx.aclose()
        await pc.close()
        await srv.aclose()


def test_connect_timeout_must_be_positive() -> None:
    from rtdub.exceptions import InputError

    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--connect-timeout-s"):
            ServeConfig(connect_timeout_s=bad).check()


# --- 10: uploads whose audio would exhaust memory -----------------------------------------


class _Unseekable:
    """A write-only file: the muxer cannot go back to write the duration."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("wb")

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def close(self) -> None:
        self._f.close()


def long_silence(path: Path, seconds: float, fmt: str, declare: bool = True) -> Path:
    """Opus silence at a few kbit/s: one second is encoded, its packets are repeated (fast). Ogg
    declares its duration (the last granule); Matroska written to a pipe declares none."""
    sink: _Unseekable | None = None
    if declare:
        out = av.open(str(path), "w", format=fmt)
    else:
        sink = _Unseekable(path)
        out = av.open(sink, "w", format=fmt)
    stream = out.add_stream("libopus", rate=48000, options={"frame_duration": "60"})
    stream.bit_rate = 6000
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 48000), np.float32), format="flt", layout="mono")
    frame.sample_rate = 48000
    frame.pts = 0
    packets = [*stream.encode(frame), *stream.encode(None)]
    steady = packets[len(packets) // 2]  # a packet of plain silence (not the first, with pre-skip)
    step = 2880  # 60 ms at 48 kHz
    payload = bytes(steady)
    for i in range(int(seconds * 48000 / step)):
        p = av.Packet(payload)
        p.pts = p.dts = i * step
        p.duration = step
        p.time_base = steady.time_base
        p.stream = stream
        out.mux(p)
    out.close()
    if sink is not None:
        sink.close()
    return path


def test_long_silence_is_refused_by_its_declared_duration_before_decoding(tmp_path: Path) -> None:
    path = long_silence(tmp_path / "silence.ogg", 25 * 60, "ogg")
    assert path.stat().st_size < 1_000_000  # 25 minutes in a small file
    with pytest.raises(AudioTooLong, match="declares 1500") as exc:
        decode_audio(path, 5.0)
    assert exc.value.decoded == 0  # nothing was decoded


def test_decoding_stops_at_the_limit_when_no_duration_is_declared(tmp_path: Path) -> None:
    path = long_silence(tmp_path / "silence.mkv", 20 * 60, "matroska", declare=False)
    with av.open(str(path)) as c:
        assert c.duration is None and c.streams.audio[0].duration is None  # nothing declared
    with pytest.raises(AudioTooLong, match="runs past") as exc:
        decode_audio(path, 5.0)
    # decoding stopped at the first frame past 5 s (frames of 60 ms), not at 20 minutes
    assert 5 * SAMPLE_RATE < exc.value.decoded <= 5 * SAMPLE_RATE + SAMPLE_RATE // 10
    # within the limit, the same kind of file decodes whole
    short = long_silence(tmp_path / "short.mkv", 3.0, "matroska", declare=False)
    assert abs(decode_audio(short, 5.0).size - 3 * SAMPLE_RATE) <= SAMPLE_RATE // 10


async def test_uploads_of_long_audio_are_refused_with_413(tmp_path: Path) -> None:
    declared = long_silence(tmp_path / "silence.ogg", 25 * 60, "ogg").read_bytes()
    undeclared = long_silence(tmp_path / "silence.mkv", 20 * 60, "matroska", declare=False).read_bytes()
    srv = DubServer(ServeConfig(port=0, max_upload_seconds=5.0, max_upload_bytes=2 * 1024 * 1024))
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            for data, why in ((declared, "declares 1500"), (undeclared, "runs past")):
                async with http.post(f"http://127.0.0.1:{srv.port}/uploads", data=data) as r:
                    assert r.status == 413
                    text = await r.text()
                    assert "longer than 5 s" in text and why in text, text
        stats = srv.stats_dict()
        assert stats["uploads_refused"] == {"too_long": 2} and stats["uploads"] == 0
        assert srv.upload_dir is not None and list(srv.upload_dir.iterdir()) == []
    finally:
        await srv.aclose()


# --- 11: bodies that stall ---------------------------------------------------------------


@pytest.fixture()
async def stalled_server(request: pytest.FixtureRequest) -> AsyncIterator[DubServer]:
    srv = DubServer(ServeConfig(port=0, read_timeout_s=request.param))
    await srv.start()
    yield srv
    await srv.aclose()


async def _stalled_upload(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Declare a chunked body, send one chunk, then send nothing more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    writer.write(head + b"10\r\n" + b"\x00" * 16 + b"\r\n")
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("stalled_server", [0.5], indirect=True)
async def test_a_stalled_upload_is_answered_408_and_its_file_removed(stalled_server: DubServer) -> None:
    srv = stalled_server
    reader, writer = await _stalled_upload(srv.port)
    try:
        status = await asyncio.wait_for(reader.readline(), 30)  # the bound only guards a hang
        assert status.startswith(b"HTTP/1.1 408"), status
        rest = await asyncio.wait_for(reader.read(), 30)
        assert b"nothing for 0.5 s" in rest and b"Connection: close" in rest
    finally:
        writer.close()
    stats = srv.stats_dict()
    assert stats["uploads_refused"] == {"timed_out": 1} and stats["uploads_in_flight"] == 0
    assert srv.upload_dir is not None and list(srv.upload_dir.iterdir()) == []


async def test_uploads_in_flight_are_bounded() -> None:
    srv = DubServer(ServeConfig(port=0, read_timeout_s=3600.0, max_uploads_in_flight=1))
    await srv.start()
    reader, writer = await _stalled_upload(srv.port)
    try:
        await _until(lambda: srv.stats_dict()["uploads_in_flight"] == 1, "the first upload in flight")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{srv.port}/uploads", data=b"x" * 100) as r:
                assert r.status == 503 and "too many uploads" in await r.text()
        assert srv.uploads_refused == {"busy": 1}
    finally:
        writer.close()
        await srv.aclose()


@pytest.mark.parametrize("stalled_server", [3600.0], indirect=True)
async def test_shutdown_cancels_a_stalled_upload(stalled_server: DubServer) -> None:
    """aiohttp alone waits 60 s for the upload's handler; closing cancels it."""
    srv = stalled_server
    reader, writer = await _stalled_upload(srv.port)
    try:
        await _until(
            lambda: srv.upload_dir is not None and any(srv.upload_dir.iterdir()), "the upload's partial file written"
        )
        assert srv.stats_dict()["uploads_in_flight"] == 1
        upload_dir = srv.upload_dir
        assert upload_dir is not None
        await asyncio.wait_for(srv.aclose(), 30)  # was 60 s; the bound only guards a hang
        assert srv.uploads_refused == {"cancelled": 1} and srv.stats_dict()["uploads_in_flight"] == 0
        assert not upload_dir.exists()
        assert await asyncio.wait_for(reader.read(), 30) == b""  # the connection was closed
    finally:
        writer.close()


# --- 12: JSON nesting, the token's forms ---------------------------------------------------


async def test_deeply_nested_or_oversized_json_is_a_4xx() -> None:
    srv = DubServer(ServeConfig(port=0))
    await srv.start()
    url = f"http://127.0.0.1:{srv.port}/offer"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data="[" * 20000 + "]" * 20000) as r:
                assert r.status == 400 and "nested too deeply" in await r.text()
            async with http.post(url, data='{"sdp": "' + "a" * 200_000 + '", "type": "offer"}') as r:
                assert r.status == 413
            async with http.post(url, data=b"\xff{") as r:
                assert r.status == 400 and "not JSON" in await r.text()
    finally:
        await srv.aclose()


async def test_token_accepts_head_on_the_page_and_any_case_of_bearer() -> None:
    srv = DubServer(ServeConfig(port=0, token="s3cret"))
    await srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.head(f"{base}/") as r:
                assert r.status == 200
            async with http.head(f"{base}/stats") as r:
                assert r.status == 401
            for auth in ("Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret "):
                async with http.get(f"{base}/stats", headers={"Authorization": auth}) as r:
                    assert r.status == 200, auth
            for auth in ("Bearers3cret", "Bearer S3CRET", "Basic s3cret", "bearer", "s3cret"):
                async with http.get(f"{base}/stats", headers={"Authorization": auth}) as r:
                    assert r.status == 401, auth
    finally:
        await srv.aclose()
