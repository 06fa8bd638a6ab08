"""Command-line front ends of the streaming engine: ``serve``, ``join`` and ``camera``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
from collections.abc import Coroutine, Mapping
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


def parse_socket(spec: str, flag: str = "--dub-socket") -> tuple[str, int] | str:
    """``HOST:PORT`` (loopback) for TCP, anything with a slash for a unix socket path."""
    if "/" in spec:
        return spec
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(flag, "expected HOST:PORT or a unix socket path")
    return host.strip("[]") or "127.0.0.1", int(port)


def _events_socket(args: argparse.Namespace) -> tuple[str, int] | str | None:
    """``--events-socket``: an address like ``--dub-socket``'s, on a loopback host."""
    if not args.events_socket:
        return None
    address = parse_socket(args.events_socket, "--events-socket")
    if isinstance(address, tuple):
        import ipaddress

        try:
            loopback = ipaddress.ip_address(address[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InputError("--events-socket", f"{address[0]} is not a loopback address")
    return address


_EVENTS_HELP = (
    "timed phoneme or viseme events of the dubbed audio as JSON lines on HOST:PORT or a path "
    '(Polly, Azure or rtdub notation; {"reset": true} starts a new utterance)'
)


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

TOKEN_ENV = "RTDUB_TOKEN"


def serve_token(token: str | None, token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The bearer token from ``--token``, else ``--token-file`` (its text, surrounding whitespace
    stripped), else ``$RTDUB_TOKEN``; the last two keep it out of ``ps``. None: no token."""
    if token is not None:
        return token
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
            mode = token_file.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError("--token-file", f"cannot read {token_file}: {exc}") from exc
        if not text.strip():
            raise InputError("--token-file", f"{token_file} is empty")
        if mode & 0o077:
            logger.warning("token file %s can be read by other users (mode %03o)", token_file, mode & 0o777)
        return text.strip()
    env = environ.get(TOKEN_ENV)
    if env is not None and not env.strip():
        raise InputError(TOKEN_ENV, "is set but empty")
    return env.strip() if env is not None else None


def cmd_serve(args: argparse.Namespace) -> int:
    from ..model import load_bundle
    from ..stream.server import ServeConfig, serve_forever

    config = ServeConfig(
        host=args.host,
        port=args.port,
        token=serve_token(args.token, args.token_file, os.environ),
        stream=_stream_config(args),
        ice_servers=tuple(args.ice_server),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        connect_timeout_s=args.connect_timeout_s,
        read_timeout_s=args.read_timeout_s,
        models_dir=args.models_dir,
    )
    config.check()
    if args.models_dir is not None and not args.models_dir.is_dir():
        raise InputError("--models-dir", f"{args.models_dir} is not a folder")
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
    p.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="a folder of model bundles (e.g. rtdub enroll's) that the page and /offer may pick by name",
    )
    auth = p.add_mutually_exclusive_group()
    auth.add_argument(
        "--token",
        default=None,
        help=f"bearer token required by every endpoint but the page (shows in ps: prefer --token-file or ${TOKEN_ENV})",
    )
    auth.add_argument("--token-file", type=Path, default=None, help=f"read the token from a file (else ${TOKEN_ENV})")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload")
    p.add_argument(
        "--connect-timeout-s",
        type=float,
        default=15.0,
        help="close a session not connected (ICE and DTLS) this long after its answer, freeing its slot (default 15)",
    )
    p.add_argument(
        "--read-timeout-s",
        type=float,
        default=10.0,
        help="answer 408 to an upload or SDP body that sends nothing for this long (default 10)",
    )
    _add_stream_options(p)
    p.set_defaults(func=cmd_serve)


# --- join -----------------------------------------------------------------------------


def cmd_join(args: argparse.Namespace) -> int:
    from ..stream.join import JoinConfig, join_forever

    cfg = JoinConfig(
        dub_socket=parse_socket(args.dub_socket) if args.dub_socket else None,
        events_socket=_events_socket(args),
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
    p.add_argument("--events-socket", default=None, help=_EVENTS_HELP)
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
        events_socket=_events_socket(args),
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
    p.add_argument("--events-socket", default=None, help=_EVENTS_HELP)
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
