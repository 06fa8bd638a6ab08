"""Peak memory of ``rtdub serve`` with one 640×480 session.

    python -m benchmarks.serve_rss [--seconds 60] [--out benchmarks/results]

Starts ``rtdub serve`` on 127.0.0.1 as its own process (the real command: uvloop when
installed, the realtime encoder), connects one aiortc client through ``POST /offer`` that
sends a generated 640×480 talking clip at 25 fps (pre-encoded VP8) with speech as its own
audio (dub source ``self``), and receives the dubbed stream back. Every second it reads the
server's resident set size from /proc; at the end its peak (VmHWM), the session's figures
from ``GET /stats``, and that SIGTERM ends the server cleanly. Writes ``serve_rss.json`` and
``serve_rss.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from rtdub import atomic
from rtdub.measure.loopbench import BITS, encode_clip, stamped_clip
from rtdub.stream.mediatracks import PacketsTrack, PcmTrack
from rtdub.stream.peer import drain
from rtdub.stream.webrtc import ice_configuration, restrict_host_addresses


def _status_mb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _session(port: int, seconds: float, pid: int) -> dict[str, Any]:
    restrict_host_addresses(["127.0.0.1"])
    total = int(seconds * 25)
    packets, _ = encode_clip(stamped_clip(total), min(total, 1 << BITS))
    from rtdub.tts import synthesize

    speech = synthesize("Hello, this is a test of the live dubbing engine. " * 3, "en").resampled(16000).samples
    pc = RTCPeerConnection(ice_configuration())
    video = pc.addTransceiver(PacketsTrack(packets, 25.0, count=total), direction="sendrecv")
    video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"])
    pc.addTransceiver(PcmTrack(speech, loop=True), direction="sendrecv")
    received = {"video": 0}
    tasks: list[asyncio.Task[None]] = []

    async def count(track: Any) -> None:
        while True:
            await track.recv()
            received["video"] += 1

    def on_track(track: Any) -> None:
        tasks.append(asyncio.create_task(count(track) if track.kind == "video" else drain(track)))

    pc.on("track", on_track)
    await pc.setLocalDescription(await pc.createOffer())
    rss: list[float] = []
    async with aiohttp.ClientSession() as http:
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "dub": {"source": "self"}}
        async with http.post(f"http://127.0.0.1:{port}/offer", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"/offer answered {resp.status}: {await resp.text()}")
            answer = await resp.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(1.0)
            v = _status_mb(pid, "VmRSS")
            if v is not None:
                rss.append(v)
        async with http.get(f"http://127.0.0.1:{port}/stats") as resp:
            stats = await resp.json()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pc.close()
    return {"rss_mb_series": [round(x, 1) for x in rss], "received_video_frames": received["video"], "stats": stats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    port = _free_port()
    cmd = [sys.executable, "-m", "rtdub.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # the server loads the model first
            if server.poll() is not None:
                print(f"serve_rss: rtdub serve exited with {server.returncode}", file=sys.stderr)
                return 1
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        idle_mb = _status_mb(server.pid, "VmRSS")
        result = asyncio.run(_session(port, args.seconds, server.pid))
        peak = _status_mb(server.pid, "VmHWM")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code: int | None = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = None
    session = (result["stats"].get("sessions") or [{}])[0]
    report = {
        "command": "python -m benchmarks.serve_rss " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "seconds": args.seconds,
        "rss_mb": {
            "before_session": round(idle_mb, 1) if idle_mb else None,
            "peak_vmhwm": round(peak, 1) if peak else None,
            "series": result["rss_mb_series"],
        },
        "received_video_frames": result["received_video_frames"],
        "session": {k: session.get(k) for k in ("output_fps", "input_frames", "output_frames", "late_frames")},
        "sigterm_exit_code": code,
    }
    atomic.write_text(args.out / "serve_rss.json", json.dumps(report, indent=1) + "\n")
    md = "\n".join(
        [
            "# rtdub serve: memory with one 640x480 session",
            "",
            f"- command: `{report['command']}`; {report['created']}; load average {report['load_average_start']}",
            f"- RSS before the session: {report['rss_mb']['before_session']} MB; "
            f"peak (VmHWM) over {args.seconds:g} s of one session: **{report['rss_mb']['peak_vmhwm']} MB**",
            f"- session: {json.dumps(report['session'])}; dubbed frames received by the client: "
            f"{report['received_video_frames']}",
            f"- exit code after SIGTERM: {code}",
            "",
        ]
    )
    atomic.write_text(args.out / "serve_rss.md", md)
    print(md)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
