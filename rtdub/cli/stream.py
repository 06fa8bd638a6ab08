"""Command-line front ends of the streaming engine: ``serve``, ``join`` and ``camera``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import EngineConfig
from ..exceptions import InputError
from .options import add_engine_options, engine_config

if TYPE_CHECKING:
    from ..stream.session import StreamConfig

logger = logging.getLogger(__name__)


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget-ms", type=float, default=100.0, help="per-frame deadline (default 100)")
    p.add_argument("--dub-delay-ms", type=float, default=0.0, help="translation lag of the dubbed audio")
    # one inference thread per stream, bicubic and no fine-detail term: the frame deadline
    add_engine_options(p, EngineConfig.stream())
    p.add_argument("--ice-server", action="append", default=[], help="STUN/TURN URL (default: none)")
    p.add_argument("--ice-host", action="append", default=None, help="gather ICE host candidates on this address only")


def parse_socket(spec: str) -> tuple[str, int] | str:
    """``HOST:PORT`` (loopback) for TCP, anything with a slash for a unix socket path."""
    if "/" in spec:
        return spec
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError("--dub-socket", "expected HOST:PORT or a unix socket path")
    return host.strip("[]") or "127.0.0.1", int(port)


def _stream_config(args: argparse.Namespace) -> StreamConfig:
    from ..stream.session import StreamConfig

    for name in ("budget_ms", "dub_delay_ms"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            raise InputError("--" + name.replace("_", "-"), f"must be a finite number >= 0, got {value!r}")
    engine = engine_config(args, EngineConfig.stream())
    if engine.render_size:
        engine.load_bundle()  # checks the render size against the bundle's crop size
    return StreamConfig(budget_ms=args.budget_ms, dub_delay_ms=args.dub_delay_ms, engine=engine)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed, else on the default loop; the video the
    engine sends uses the realtime VP8 settings (rtdub.stream.encoders)."""
    from ..stream import encoders

    encoders.install()
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    finally:
        encoders.uninstall()  # the command is over: leave aiortc as it was (in-process callers)


def _apply_ice_hosts(args: argparse.Namespace) -> None:
    if args.ice_host:
        from ..stream.webrtc import restrict_host_addresses

        restrict_host_addresses(args.ice_host)


# --- serve ----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from ..model import load_bundle
    from ..stream.server import ServeConfig, serve_forever

    config = ServeConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        stream=_stream_config(args),
        ice_servers=tuple(args.ice_server),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
    )
    config.check()
    load_bundle(args.model)  # a broken model is an error now, not at the first call
    _apply_ice_hosts(args)

    def ready(port: int) -> None:
        print(f"rtdub: serving on http://{args.host}:{port}/", flush=True)

    _run(serve_forever(config, ready))
    print("rtdub: stopped", flush=True)
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="WebRTC dubbing server: browser page, /offer, WHIP, WHEP, stats")
    p.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs --token)")
    p.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    p.add_argument("--token", default=None, help="bearer token required by every endpoint but the page")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload")
    _add_stream_options(p)
    p.set_defaults(func=cmd_serve)


# --- join -----------------------------------------------------------------------------


def cmd_join(args: argparse.Namespace) -> int:
    from ..stream.join import JoinConfig, join_forever

    cfg = JoinConfig(
        dub_socket=parse_socket(args.dub_socket) if args.dub_socket else None,
        whep=args.whep,
        whip=args.whip,
        token=args.token,
        stream=_stream_config(args),
        ice_servers=tuple(args.ice_server),
    )
    _apply_ice_hosts(args)
    _run(join_forever(cfg))
    return 0


def _add_join(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("join", help="pull a stream with WHEP, publish it dubbed with WHIP")
    p.add_argument("--whep", required=True, help="WHEP URL of the speaker's stream")
    p.add_argument("--whip", required=True, help="WHIP URL to publish the dubbed stream to")
    p.add_argument("--token", default=None, help="bearer token for both endpoints")
    p.add_argument("--dub-socket", default=None, help="dubbed audio as PCM s16le 16 kHz mono on HOST:PORT or a path")
    _add_stream_options(p)
    p.set_defaults(func=cmd_join)


# --- camera ---------------------------------------------------------------------------


def cmd_camera(args: argparse.Namespace) -> int:
    from ..stream.camera import CameraConfig, run_camera

    cfg = CameraConfig(
        input=args.input,
        dub_input=args.dub_input,
        dub_file=args.dub_file,
        dub_socket=parse_socket(args.dub_socket) if args.dub_socket else None,
        audio_output=args.audio_output,
        fps=args.fps,
        width=args.width,
        height=args.height,
        stream=_stream_config(args),
    )
    _run(run_camera(cfg))
    return 0


def _add_camera(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("camera", help="dub a camera or file into a virtual camera (pyvirtualcam)")
    p.add_argument("--input", required=True, help="camera device (e.g. /dev/video0) or a media file")
    p.add_argument("--dub-input", default=None, help="audio input device with the dubbed speech")
    p.add_argument("--dub-file", type=Path, default=None, help="dubbed speech from a file (demo)")
    p.add_argument("--dub-socket", default=None, help="dubbed audio as PCM s16le 16 kHz mono on HOST:PORT or a path")
    p.add_argument("--audio-output", default=None, help="audio output device for the dubbed speech")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    _add_stream_options(p)
    p.set_defaults(func=cmd_camera)


def add_stream_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_serve(sub)
    _add_join(sub)
    _add_camera(sub)
