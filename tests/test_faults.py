"""Faults over loopback WebRTC: 5% packet loss, the face lost and found, a resolution change,
the dubbed audio stopping, and the peer disconnecting. The engine keeps running and recovers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import av
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from rtdub.stream.mediatracks import FramesTrack, PcmTrack
from rtdub.stream.scheduler import Rendered
from rtdub.stream.server import DubServer, ServeConfig
from rtdub.stream.session import StreamConfig
from rtdub.stream.webrtc import ice_configuration, restrict_host_addresses

from .factories import speechlike
from .streamkit import Receiver, make_pipeline, portrait_frames, read_stamp, stamp


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    restrict_host_addresses(["127.0.0.1"])
    yield
    restrict_host_addresses(None)


def _scenario() -> list[np.ndarray]:
    """0-19 face (512²), 20-31 no face, 32-49 face again, 50-74 face at 640×480."""
    faces = portrait_frames(75)
    blank = np.full((512, 512, 3), 90, np.uint8)
    out = [stamp(faces[i], i) for i in range(20)]
    out += [stamp(blank, i) for i in range(20, 32)]
    out += [stamp(faces[i], i) for i in range(32, 50)]
    for i in range(50, 75):  # another camera mode: 640×480, the face a bit smaller
        img = cv2.resize(np.asarray(faces[i]), (480, 480), interpolation=cv2.INTER_AREA)
        out.append(stamp(np.pad(img, ((0, 0), (80, 80), (0, 0)), mode="edge"), i))
    return out


def _lossy(pc: RTCPeerConnection, rate: float, seed: int = 0) -> list[int]:
    """Drop ``rate`` of the packets the client sends (a lossy transport); returns counters."""
    rng = random.Random(seed)
    counts = [0, 0]
    for sender in pc.getSenders():
        transport = sender.transport
        send = transport._send_rtp

        async def lossy(data: bytes, send: Callable[[bytes], Awaitable[None]] = send) -> None:
            counts[0] += 1
            if rng.random() < rate:
                counts[1] += 1
                return
            await send(data)

        setattr(transport, "_send_rtp", lossy)  # noqa: B010 - patch one instance
    return counts


# The source's pace. The engine drops stale frames when it falls behind (a counted policy), so
# at 25 fps a loaded 2-core host rendered as few as 1 of the 12 faceless frames (CI, eefaffd)
# and the phases below could not all be checked; at 10 fps it keeps up with room to spare.
FPS = 10


@pytest.mark.flaky(reruns=2)  # lossy loopback transport on wall-clock time, like test_webrtc's
async def test_engine_survives_loss_face_loss_resolution_change_silence_and_disconnect() -> None:
    srv = DubServer(ServeConfig(port=0, stream=StreamConfig(budget_ms=150)), make_pipeline)
    await srv.start()
    base = f"http://127.0.0.1:{srv.port}"
    frames = _scenario()
    pc = RTCPeerConnection(ice_configuration())
    pc.addTrack(FramesTrack(frames, FPS))
    speech = speechlike(1.0, seed=9) * 3
    pc.addTrack(PcmTrack(speech, pad_seconds=len(frames) / FPS))  # speech stops after 1 s
    rx = Receiver()

    def on_track(track: MediaStreamTrack) -> None:
        rx.attach(track)

    pc.on("track", on_track)
    records: dict[int, tuple[tuple[int, int], Rendered]] = {}

    def probe(src: av.VideoFrame, out: av.VideoFrame, r: Rendered) -> None:
        records[read_stamp(src.to_ndarray(format="rgb24"))] = ((src.width, src.height), r)

    try:
        await pc.setLocalDescription(await pc.createOffer())
        counts = _lossy(pc, 0.05)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                assert r.status == 200
                answer = await r.json()
            peer = srv.peers[answer["session"]]
            peer.session.probe = probe
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await rx.wait_for(len(frames), timeout=len(frames) / FPS + 3)
            async with http.get(f"{base}/stats") as r:
                stats = (await r.json())["sessions"][0]
        assert counts[1] > 0  # packets really were lost
        # every phase produced output
        phases = {"face": range(0, 20), "blank": range(20, 32), "back": range(32, 50), "vga": range(50, 75)}
        seen = {k: [i for i in records if i in v] for k, v in phases.items()}
        assert all(len(v) >= 3 for v in seen.values()), {k: len(v) for k, v in seen.items()}
        # no face: passed through untouched; face found again after it, also at 640×480
        assert all(records[i][1].region is None and not records[i][1].face for i in seen["blank"])
        assert sum(records[i][1].face for i in seen["back"]) >= len(seen["back"]) - 3
        vga = [records[i] for i in seen["vga"]]
        assert all(size == (640, 480) for size, _ in vga)
        assert sum(r.face for _, r in vga) >= len(vga) - 4
        # the dubbed audio stopped after 1 s: the last frames are dubbed with closed lips
        assert all(r.silent for _, r in vga if r.face)
        # the client received frames of both sizes, in pts order
        sizes = {img.shape[:2] for _, _, img in rx.frames}
        assert {(512, 512), (480, 640)} <= sizes
        pts = [p for _, p, _ in rx.frames]
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
        # every frame the engine received was sent or dropped by a counted policy (a frame or
        # two may be in flight); how many it drops as stale depends on the machine's speed
        # (a benchmark matter), so the floor only rules out a stalled engine
        dropped = sum(stats["dropped_frames"].values())
        assert 0 <= stats["input_frames"] - stats["output_frames"] - dropped <= 2, stats
        assert stats["output_frames"] >= 25, stats
        # the peer disconnects: the server drops the session and keeps serving
        await pc.close()
        for _ in range(150):
            if not srv.peers:
                break
            await asyncio.sleep(0.1)
        assert srv.peers == {}
        async with aiohttp.ClientSession() as http, http.get(f"{base}/stats") as r:
            assert r.status == 200 and (await r.json())["sessions"] == []
    finally:
        await rx.aclose()
        await pc.close()
        await srv.aclose()
