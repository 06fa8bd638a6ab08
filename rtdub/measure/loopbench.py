"""Loopback WebRTC measurement of the streaming engine (``python -m rtdub.measure.loopbench``).

One aiortc client sends a generated 640×480 talking clip at 25 fps (frame indices stamped in
the pixels) and its audio to an engine peer on 127.0.0.1. The engine feeds the same input to
two sessions: a passthrough one (budget 0: every frame passes through the same ring, track
and encoder) and the dubbed one, and sends both back. For each frame index the client takes
the time from handing the frame to its encoder to decoding it back, on both paths, so the
added latency of dubbing is measured in the same run, frame by frame.

Prints one JSON object: fps of both paths, glass-to-glass latency p50/p95/p99 of both, the
added latency, per-stage timings, late and dropped frames, A/V offsets over time, and the
process RSS. ``--dub-file`` plays a file (looped) as the dubbed audio, for long runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .. import atomic
from ..cli.options import add_engine_options, engine_config
from ..engine import EngineConfig
from ..exceptions import InputError
from ..stream import encoders
from ..stream.dubsources import ClipSource, TrackSource, decode_audio
from ..stream.mediatracks import FramesTrack, PacketsTrack, PcmTrack
from ..stream.peer import drain
from ..stream.session import DubSession, StreamConfig, default_pipeline_factory
from ..stream.webrtc import ice_configuration, restrict_host_addresses

logger = logging.getLogger(__name__)

CELL, BITS = 16, 12


def stamp(image: np.ndarray, index: int) -> np.ndarray:
    out = image.copy()
    for b in range(BITS):
        out[0:CELL, b * CELL : (b + 1) * CELL] = 255 if (index >> b) & 1 else 0
    return out


def read_stamp(image: np.ndarray) -> int:
    return sum(1 << b for b in range(BITS) if image[3 : CELL - 3, b * CELL + 3 : (b + 1) * CELL - 3].mean() > 128)


def _top_rows(frame: object) -> np.ndarray:
    """The luma of the stamp rows only (cheap: no colour conversion of the whole frame)."""
    plane = frame.planes[0]  # type: ignore[attr-defined]
    width = int(frame.width)  # type: ignore[attr-defined]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:CELL, :width]
    return np.repeat(rows[:, :, None], 3, axis=2)


def clip_frames(n: int, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """The astronaut portrait, face at about 60% of the height, with head motion."""
    import cv2

    from . import samples

    face = cv2.resize(samples.portrait(), (height, height), interpolation=cv2.INTER_AREA)
    pad = (width - height) // 2
    base = np.pad(face, ((0, 0), (pad, width - height - pad), (0, 0)), mode="edge")
    return list(samples.head_motion(base, n, 25.0, centre=(pad + 230 * height / 512, 130 * height / 512)))


def rss_mb() -> float:
    """Current resident set size (MB), from /proc when there is one."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def host_cpu() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat, or None off Linux. Steal is time
    the hypervisor gave this VM's CPUs to others: a noisy host shows up there."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _pcts(x: list[float]) -> dict[str, float]:
    if not x:
        return {}
    a = np.asarray(x) * 1000
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1), "n": len(x)}


class _Sink:
    def __init__(self, sent_at: dict[int, float], clock: Callable[[], float]) -> None:
        self.sent_at = sent_at
        self.clock = clock
        self.latency: dict[int, float] = {}
        self.times: list[float] = []

    async def run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = self.clock()
                stamp_idx = read_stamp(_top_rows(frame))
                if self.sent_at:  # the stamp wraps: the newest sent frame with that stamp
                    last = max(self.sent_at) // 3600
                    idx = last - ((last - stamp_idx) % (1 << BITS))
                    if idx * 3600 in self.sent_at:
                        self.latency[idx] = now - self.sent_at[idx * 3600]
                self.times.append(now)
        except (MediaStreamError, asyncio.CancelledError):
            pass


def stamped_clip(total: int, n_src: int = 125) -> Callable[[int], np.ndarray | None]:
    """Frame ``i`` of the talking clip played ping-pong, stamped with ``i`` (None past ``total``)."""
    frames = clip_frames(n_src)

    def frame_at(i: int) -> np.ndarray | None:
        if i >= total:
            return None
        k = i % (2 * n_src - 2)
        return stamp(frames[k if k < n_src else 2 * n_src - 2 - k], i % (1 << BITS))

    return frame_at


def encode_clip(frame_at: Callable[[int], np.ndarray | None], n: int) -> tuple[list[bytes], float]:
    """The first ``n`` frames encoded once (VP8, 1 Mbit/s, realtime settings, the first a key
    frame), so the client does not spend the cores the engine is measured on; and the mean
    encode time per frame (ms)."""
    import fractions

    import cv2

    codec = encoders.open_vp8(640, 480, 1_000_000)
    packets: list[bytes] = []
    spent = 0.0
    for i in range(n):
        image = frame_at(i)
        if image is None:
            break
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90000)
        t = time.perf_counter()
        out = codec.encode(frame)
        spent += time.perf_counter() - t
        packets.append(b"".join(bytes(p) for p in out))
    return packets, spent / max(1, len(packets)) * 1000


def _speech(args: argparse.Namespace) -> np.ndarray:
    from ..audio import SAMPLE_RATE

    speech = decode_audio(args.dub_file) if args.dub_file else None
    if speech is None:
        from ..tts import synthesize

        speech = (
            synthesize("Hello, this is a test of the live dubbing engine. " * 3, "en").resampled(SAMPLE_RATE).samples
        )
    return speech


def _engine_process(conn: Connection, args: argparse.Namespace) -> None:
    """Child process: the engine peer (passthrough and dubbed sessions)."""
    logging.basicConfig(level=logging.ERROR)
    encoders.install()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_engine(conn, args))
    else:
        uvloop.run(_engine(conn, args))


async def _engine(conn: Connection, args: argparse.Namespace) -> None:
    restrict_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    offer = await loop.run_in_executor(None, conn.recv)
    stream = StreamConfig(
        budget_ms=args.budget_ms,
        dub_delay_ms=args.dub_delay_ms,
        engine=args.engine,
        track_ahead=not args.no_track_ahead,
        speculate=not args.no_speculate,
        direct_tracking=not args.graph_tracking,
    )
    factory = default_pipeline_factory(stream)
    passthrough = DubSession(StreamConfig(budget_ms=0), factory, name="passthrough")
    dubbed = DubSession(stream, factory, name="dubbed")
    engine = RTCPeerConnection(ice_configuration())
    relay = MediaRelay()
    got: dict[str, MediaStreamTrack] = {}
    engine.on("track", lambda t: got.setdefault(t.kind, t))
    drains: list[asyncio.Task[None]] = []  # every track nobody reads is drained (aiortc queues without bound)
    await engine.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    passthrough.set_video(relay.subscribe(got["video"], buffered=False))
    dubbed.set_video(relay.subscribe(got["video"], buffered=False))
    if args.dub_file:
        dubbed.set_dub(ClipSource(_speech(args), name="file", loop=True))
        drains.append(asyncio.create_task(drain(got["audio"])))
    else:
        dubbed.set_dub(TrackSource(relay.subscribe(got["audio"], buffered=False), synchronous=True, name="self"))
    vt = [t for t in engine.getTransceivers() if t.kind == "video"]
    vt[0].sender.replaceTrack(passthrough.video)
    vt[0].direction = "sendrecv"
    vt[1].sender.replaceTrack(dubbed.video)
    vt[1].direction = "sendonly"
    at = [t for t in engine.getTransceivers() if t.kind == "audio"]
    at[1].sender.replaceTrack(dubbed.audio)
    at[1].direction = "sendonly"
    await passthrough.start()
    await dubbed.start()
    await engine.setLocalDescription(await engine.createAnswer())
    conn.send(engine.localDescription.sdp)
    offsets: list[tuple[float, float]] = []
    rss: list[tuple[float, float]] = []
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)
        snap0 = tracemalloc.take_snapshot()
    t0 = clock()
    cpu0 = time.process_time()
    period = min(1.0, args.seconds / 20)
    while not conn.poll():
        await asyncio.sleep(period)
        offsets.append((clock() - t0, dubbed.last_av_offset_ms))
        rss.append((clock() - t0, rss_mb()))
    wall, cpu = clock() - t0, time.process_time() - cpu0
    if args.tracemalloc:
        top = tracemalloc.take_snapshot().compare_to(snap0, "traceback")[:5]
        for st in top:
            logger.error("growth %s\n%s", st, "\n".join(st.traceback.format()))
    stats = dubbed.stats()
    engine_delay = {
        "passthrough": _pcts(passthrough.video_latencies()),
        "dubbed": _pcts(dubbed.video_latencies()),
    }
    for t in drains:
        t.cancel()
    await asyncio.gather(*drains, return_exceptions=True)
    await engine.close()
    await dubbed.aclose()
    await passthrough.aclose()
    off = np.array([o for t, o in offsets if t > 2.0] or [0.0])
    tenth = max(1, len(off) // 10)
    minutes: dict[int, list[float]] = {}
    for when, o in offsets:
        minutes.setdefault(int(when // 60), []).append(o)
    conn.send(
        {
            "engine_delay_ms": engine_delay,  # release (arrival + dub delay) to hand-off to the encoder
            "stages_ms": stats["scheduler"].get("stages_ms", {}),
            "modes": stats["scheduler"].get("modes", {}),
            "late_frames": stats["late_frames"],
            "dropped_frames": stats["dropped_frames"],
            "av_offset_ms": {
                "median": round(float(np.median(off)), 1),
                "first_tenth_median": round(float(np.median(off[:tenth])), 1),
                "last_tenth_median": round(float(np.median(off[-tenth:])), 1),
                "audio_output_delay_steps": stats["audio_output_delay_steps"],
                "per_minute_median": [round(float(np.median(v)), 1) for _, v in sorted(minutes.items())],
            },
            "rss_mb": {
                "start": round(rss[0][1], 1) if rss else None,
                "end": round(rss[-1][1], 1) if rss else None,
                "peak": round(max(r for _, r in rss), 1) if rss else None,
                "series": [[round(t, 1), round(r, 1)] for t, r in rss[:: max(1, len(rss) // 120)]],
            },
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cpu_cores": round(cpu / wall, 2) if wall > 0 else None,
            "track_ahead": stats.get("track_ahead"),
            "engine_config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(stream).items()},
        }
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The client (the glass: camera in, screen out) in this process, the engine in a child
    process, as a call client and the engine would be: they share the cores, not the GIL."""
    restrict_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    clock = time.monotonic  # system-wide: both processes read the same clock
    total = int(args.seconds * 25)
    frame_at = stamped_clip(total)

    if args.live_encode:
        video: FramesTrack | PacketsTrack = FramesTrack(frame_at, 25.0, clock=clock)
        encode_ms = None
    else:
        packets, encode_ms = encode_clip(frame_at, min(total, 1 << BITS))
        video = PacketsTrack(packets, 25.0, count=total, clock=clock)
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_engine_process, args=(child_conn, args), name="rtdub-loopbench-engine")
    proc.start()
    client = RTCPeerConnection(ice_configuration())
    sender = client.addTransceiver(video, direction="sendrecv")
    vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/vp8"]
    sender.setCodecPreferences(vp8)  # the pre-encoded packets are VP8
    client.addTransceiver("video", direction="recvonly")
    client.addTransceiver(PcmTrack(_speech(args), loop=True), direction="sendonly")
    client.addTransceiver("audio", direction="recvonly")
    sinks = {"passthrough": _Sink(video.sent_at, clock), "dubbed": _Sink(video.sent_at, clock)}
    client_tracks: list[MediaStreamTrack] = []
    drains: list[asyncio.Task[None]] = []

    def on_client_track(t: MediaStreamTrack) -> None:
        if t.kind == "video":
            client_tracks.append(t)
        else:
            drains.append(asyncio.create_task(drain(t)))

    client.on("track", on_client_track)
    tasks: list[asyncio.Task[None]] = []
    try:
        await client.setLocalDescription(await client.createOffer())
        conn.send(client.localDescription.sdp)
        if not await loop.run_in_executor(None, conn.poll, 120.0):
            raise RuntimeError("the engine process did not answer within 120 s")
        answer = conn.recv()
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        for _ in range(100):
            if len(client_tracks) >= 2:
                break
            await asyncio.sleep(0.05)
        # the first remote video track of the client is the passthrough one (mid order)
        for name, track in zip(("passthrough", "dubbed"), client_tracks, strict=False):
            tasks.append(asyncio.create_task(sinks[name].run(track)))
        t0 = clock()
        cpu0 = host_cpu()
        await asyncio.sleep(args.seconds + 1.0)
        cpu1 = host_cpu()
        conn.send("stop")
        if not await loop.run_in_executor(None, conn.poll, 60.0):
            raise RuntimeError("the engine process did not report within 60 s")
        engine_stats: dict[str, Any] = conn.recv()
    finally:
        for t in tasks + drains:
            t.cancel()
        await asyncio.gather(*tasks, *drains, return_exceptions=True)
        await client.close()
        await loop.run_in_executor(None, proc.join, 30.0)
        if proc.is_alive():
            proc.kill()
    lp, ld = sinks["passthrough"].latency, sinks["dubbed"].latency
    both = sorted(set(lp) & set(ld))
    added = [ld[i] - lp[i] for i in both]
    per_minute: dict[str, list[int]] = {}
    for name, sink in sinks.items():
        counts = np.bincount([int((t - t0) // 60) for t in sink.times if t >= t0], minlength=1)
        per_minute[name] = [int(c) for c in counts]
    warm = [t for t in sinks["dubbed"].times if t - t0 > 2.0]
    warm_p = [t for t in sinks["passthrough"].times if t - t0 > 2.0]
    return {
        "seconds": args.seconds,
        "resolution": "640x480",
        "fps": {
            "dubbed": round((len(warm) - 1) / (warm[-1] - warm[0]), 2) if len(warm) > 1 else 0.0,
            "passthrough": round((len(warm_p) - 1) / (warm_p[-1] - warm_p[0]), 2) if len(warm_p) > 1 else 0.0,
        },
        "frames_sent": video.index,
        "frames_received_per_minute": per_minute,
        "glass_to_glass_ms": {"passthrough": _pcts(list(lp.values())), "dubbed": _pcts(list(ld.values()))},
        "added_latency_ms": _pcts(added),
        "host_steal_pct": round(100 * (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]), 2)
        if cpu0 is not None and cpu1 is not None
        else None,
        **engine_stats,
        "processes": "client (sender, both receivers, measurement) in the parent; the engine in a child process",
        "client_sender": "live aiortc VP8 encoder"
        if encode_ms is None
        else f"pre-encoded VP8 (realtime settings, {encode_ms:.1f} ms/frame to encode, not part of the "
        "measured latency: frames are timed from their hand-off to the RTP sender)",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--budget-ms", type=float, default=100.0)
    p.add_argument("--dub-delay-ms", type=float, default=0.0)
    p.add_argument("--dub-file", type=Path, default=None, help="dubbed audio played in a loop")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument(
        "--live-encode", action="store_true", help="the client encodes live with aiortc's default VP8 settings"
    )
    p.add_argument("--no-track-ahead", action="store_true", help="track in the render thread (for comparison)")
    p.add_argument(
        "--graph-tracking",
        action="store_true",
        help="track every frame through mediapipe's graph, not the landmark model run directly (for comparison)",
    )
    p.add_argument("--no-speculate", action="store_true", help="no speculative alignment (for comparison)")
    add_engine_options(p, EngineConfig.stream())  # the dubbed session's engine
    p.add_argument("--tracemalloc", action="store_true", help="log the largest memory growth")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.out and (problem := atomic.writable_dir(args.out)) is not None:
        print(f"loopbench: error: --out: {problem}", file=sys.stderr)
        return 2
    try:
        args.engine = engine_config(args, EngineConfig.stream())
    except InputError as exc:
        print(f"loopbench: error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        atomic.write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
