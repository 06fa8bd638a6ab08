"""``rtdub serve``: the HTTP side of the streaming engine (aiohttp).

Endpoints:

- ``GET /``            the browser page (camera in, dubbed stream back; upload or TTS choice)
- ``POST /offer``      JSON ``{sdp, type, dub?}`` -> JSON answer; sendrecv, the dubbed stream
                       comes back on the same connection
- ``POST /uploads``    a media file as the request body -> ``{"id", "seconds"}``; size-limited
                       and type-checked by decoding its audio with PyAV
- ``POST /whip``       WHIP ingest (``application/sdp``) -> 201 + Location; ``DELETE`` ends it
- ``POST /whep``       WHEP playback of the dubbed output of the newest session (or
                       ``?session=ID``) -> 201 + Location; ``DELETE`` ends it
- ``GET /stats``       per-session timings, late and dropped frames, A/V offset
- ``GET /models``      the bundles of ``--models-dir`` a client may name (``{"models": [...]}``);
                       ``/offer``'s ``model`` names one of them (never a path): that session
                       is dubbed with it (rtdub/stream/models.py)

Safety: binds 127.0.0.1 by default and refuses any other address without a token. With a
token, every endpoint but the page (``GET``/``HEAD /``) needs ``Authorization: Bearer <token>``
(the scheme in any case). Uploaded files get server-chosen names in a private temporary
directory; no client string becomes a path.

Bounds: a session not connected (ICE and DTLS) ``connect_timeout_s`` after its answer is closed
and its slot freed; a request body (upload, SDP, JSON) that stalls ``read_timeout_s`` between
parts or takes over ``upload_deadline_s`` in all is answered 408 and its partial file deleted;
an upload's audio is refused (413) by its declared duration before decoding, and its decoding
(in an executor) stops at ``max_upload_seconds``; at most ``max_uploads_in_flight`` uploads are
received or decoded at once (503 beyond); shutdown cancels uploads in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from ..exceptions import InputError, RtdubError
from .models import ModelCatalog
from .peer import DubSpec, EnginePeer
from .session import PipelineFactory, StreamConfig, default_pipeline_factory
from .webrtc import ice_configuration

logger = logging.getLogger(__name__)

MAX_SDP = 64 * 1024
MAX_OFFER = MAX_SDP + 32 * 1024  # the JSON of /offer: the SDP and the dub object (text up to 2000 chars)
READ_CHUNK = 64 * 1024
# At shutdown, how long a request in progress may take to finish, and then how long a connection
# still reading a refused body (aiohttp "lingers" up to 10 s after a 408 or 413) is given, before
# aiohttp cancels it (its default is 60 s each). Uploads in flight are cancelled at once.
SHUTDOWN_GRACE_S = 2.0
_ID_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    stream: StreamConfig = field(default_factory=StreamConfig)
    ice_servers: tuple[str, ...] = ()
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_seconds: float = 600.0
    max_sessions: int = 4
    max_uploads: int = 16  # kept on disk; the oldest is deleted first
    max_uploads_in_flight: int = 4  # being received or decoded at once; more are refused (503)
    connect_timeout_s: float = 15.0  # from the answer to ICE and DTLS connected, or the session is closed
    read_timeout_s: float = 10.0  # the longest wait for the next part of a request body
    upload_deadline_s: float = 300.0  # the longest a request body may take in all
    models_dir: Path | None = None  # bundles a client may pick by name (GET /models, /offer "model")

    def check(self) -> None:
        """InputError when the host is not loopback and there is no token, or a bound is not
        a positive number."""
        if self.token is not None and not self.token.strip():
            raise InputError("--token", "must not be empty")
        if not _is_loopback(self.host) and not self.token:
            raise InputError(
                "--host",
                f"binding {self.host} needs a token: --token, --token-file or $RTDUB_TOKEN (loopback needs none)",
            )
        for flag, value in (
            ("--connect-timeout-s", self.connect_timeout_s),
            ("--read-timeout-s", self.read_timeout_s),
            ("upload_deadline_s", self.upload_deadline_s),
            ("max_upload_seconds", self.max_upload_seconds),
        ):
            if not (math.isfinite(value) and value > 0):
                raise InputError(flag, f"must be a finite number > 0, got {value!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bearer_matches(header: str, token: str) -> bool:
    """``Bearer <token>``, the scheme in any case (auth schemes are case-insensitive, RFC 9110 §11.1)."""
    scheme, _, credentials = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DubServer:
    """Lifecycle: ``await start()`` (returns the bound port), ``await aclose()``."""

    def __init__(
        self,
        config: ServeConfig,
        factory: PipelineFactory | None = None,
        model_factory: Callable[[Path], PipelineFactory] | None = None,
    ) -> None:
        config.check()
        self.config = config
        self._factory = factory
        self.models = ModelCatalog(config.models_dir) if config.models_dir is not None else None
        # a pipeline factory per named bundle and manifest time (a re-enrolled bundle is reloaded)
        self._model_factory = model_factory or self._bundle_factory
        self._model_factories: dict[tuple[str, float], PipelineFactory] = {}
        self.peers: dict[str, EnginePeer] = {}
        self.whep: dict[str, EnginePeer] = {}  # viewer id -> the peer whose output it plays
        self.uploads: dict[str, tuple[Path, float]] = {}
        self._upload_dir: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._uploading: set[asyncio.Task[Any]] = set()  # upload handlers in flight (shutdown cancels them)
        self.connect_timeouts = 0  # sessions closed for not connecting in time
        self.viewer_connect_timeouts = 0  # of peers already gone (live peers keep their own count)
        self.uploads_refused: dict[str, int] = {}  # reason -> count
        self._started = time.monotonic()
        self.port = config.port
        self.app = self._make_app()

    # --- app --------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_upload_bytes + 1024, middlewares=[self._auth])
        app.router.add_get("/", self.page)
        app.router.add_post("/offer", self.offer)
        app.router.add_post("/uploads", self.upload)
        app.router.add_post("/whip", self.whip)
        app.router.add_delete("/whip/{id}", self.whip_delete)
        app.router.add_post("/whep", self.whep_post)
        app.router.add_delete("/whep/{id}", self.whep_delete)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/models", self.list_models)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.config.token
        if token and not (request.method in ("GET", "HEAD") and request.path == "/"):
            if not _bearer_matches(request.headers.get("Authorization", ""), token):
                raise web.HTTPUnauthorized(
                    text="missing or wrong bearer token\n", headers={"WWW-Authenticate": "Bearer"}
                )
        try:
            return await handler(request)
        except InputError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from exc

    def _factory_or_default(self) -> PipelineFactory:
        if self._factory is None:
            self._factory = default_pipeline_factory(self.config.stream)
        return self._factory

    def _check_capacity(self) -> None:
        if len(self.peers) >= self.config.max_sessions:
            raise web.HTTPServiceUnavailable(text="too many sessions\n")

    def _bundle_factory(self, path: Path) -> PipelineFactory:
        stream = self.config.stream
        return default_pipeline_factory(
            dataclasses.replace(stream, engine=dataclasses.replace(stream.engine, model=path))
        )

    def _factory_for(self, model: object) -> PipelineFactory:
        """The default pipeline factory, or the one of the bundle the client named."""
        if model is None or model == "":
            return self._factory_or_default()
        if self.models is None:
            raise InputError("model", "this server offers no models to choose from (--models-dir)")
        path = self.models.resolve(model)
        try:
            key = (path.name, (path / "manifest.json").stat().st_mtime)
        except OSError as exc:  # removed since it was listed
            raise InputError("model", f"{path.name!r} is gone from the server's models folder") from exc
        if key not in self._model_factories:
            self._model_factories = {k: v for k, v in self._model_factories.items() if k[0] != key[0]}
            self._model_factories[key] = self._model_factory(path)
        return self._model_factories[key]

    async def _new_peer(
        self, spec: DubSpec, sdp: str, send_back: bool, factory: PipelineFactory | None = None
    ) -> EnginePeer:
        self._check_capacity()
        if not sdp or len(sdp) > MAX_SDP:
            raise InputError("sdp", "missing or too large")
        peer = EnginePeer(
            self.config.stream,
            factory or self._factory_or_default(),
            spec,
            ice_configuration(self.config.ice_servers),
            send_back=send_back,
            resolve_upload=self._resolve_upload,
        )
        self.peers[peer.id] = peer
        try:
            await peer.answer(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, RtdubError) as exc:
            self.peers.pop(peer.id, None)
            raise web.HTTPBadRequest(text=f"{exc}\n") from exc
        except BaseException:
            self.peers.pop(peer.id, None)
            raise
        task = asyncio.create_task(self._watch(peer), name=f"rtdub-watch-{peer.id}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return peer

    async def _watch(self, peer: EnginePeer) -> None:
        """Close a session that is not connected in time (an abandoned offer would hold its
        slot until ICE gives up, minutes later); forget it once closed."""
        timeout = self.config.connect_timeout_s
        with contextlib.suppress(asyncio.CancelledError):
            if not await peer.connect_within(timeout) and not peer.closed.is_set():
                self.connect_timeouts += 1
                logger.warning(
                    "session %s: not connected %.1f s after its answer (ICE %s, connection %s): closed (%d so far)",
                    peer.id,
                    timeout,
                    peer.pc.iceConnectionState,
                    peer.pc.connectionState,
                    self.connect_timeouts,
                )
                try:
                    await peer.aclose()
                except Exception:
                    logger.exception("session %s: closing it failed", peer.id)
            await peer.closed.wait()
        self._forget(peer)

    def _forget(self, peer: EnginePeer) -> None:
        if self.peers.pop(peer.id, None) is peer:
            self.viewer_connect_timeouts += peer.viewer_connect_timeouts
        for vid, p in list(self.whep.items()):
            if p is peer:
                del self.whep[vid]

    # --- handlers ---------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        from .webpage import PAGE

        return web.Response(text=PAGE, content_type="text/html")

    async def offer(self, request: web.Request) -> web.Response:
        raw = await self._read_body(request, MAX_OFFER)
        try:
            body = json.loads(raw)
        except RecursionError as exc:  # json recurses per level: "[[[[..." exhausts the stack
            raise InputError("body", "JSON nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise InputError("body", "not JSON") from exc
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            raise InputError("body", 'expected {"sdp": ..., "type": "offer"}')
        spec = DubSpec.parse(body.get("dub"))
        factory = self._factory_for(body.get("model"))
        peer = await self._new_peer(spec, body["sdp"], send_back=True, factory=factory)
        desc = peer.pc.localDescription
        return web.json_response({"sdp": desc.sdp, "type": desc.type, "session": peer.id})

    async def _read_sdp(self, request: web.Request) -> str:
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="expected application/sdp\n")
        return (await self._read_body(request, MAX_SDP)).decode("utf-8", errors="replace")

    async def _body_chunks(self, request: web.Request) -> AsyncGenerator[bytes, None]:
        """The request body in parts, each awaited at most ``read_timeout_s``, the whole within
        ``upload_deadline_s``; 408 (and the connection closed) when the client stalls."""
        loop = asyncio.get_running_loop()
        stall, total = self.config.read_timeout_s, self.config.upload_deadline_s
        end = loop.time() + total
        received = 0
        while True:
            wait = min(stall, end - loop.time())
            try:
                if wait <= 0:
                    raise asyncio.TimeoutError
                chunk = await asyncio.wait_for(request.content.read(READ_CHUNK), wait)
            except asyncio.TimeoutError:
                why = f"nothing for {stall:g} s" if wait == stall else f"over {total:g} s in all"
                logger.warning("%s %s: body timed out after %d bytes (%s)", request.method, request.path, received, why)
                raise web.HTTPRequestTimeout(
                    text=f"request body timed out: {why}\n", headers={"Connection": "close"}
                ) from None
            if not chunk:
                return
            received += len(chunk)
            yield chunk

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        """A small body whole: 413 beyond ``limit`` bytes, 408 when it stalls."""
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        parts: list[bytes] = []
        size = 0
        async with contextlib.aclosing(self._body_chunks(request)) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
                parts.append(chunk)
        return b"".join(parts)

    async def whip(self, request: web.Request) -> web.Response:
        sdp = await self._read_sdp(request)
        spec = DubSpec.parse({k: v for k, v in request.query.items() if k in ("source", "text", "voice", "id")})
        peer = await self._new_peer(spec, sdp, send_back=False)
        return web.Response(
            status=201,
            text=peer.pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whip/{peer.id}"},
        )

    async def whip_delete(self, request: web.Request) -> web.Response:
        peer = self.peers.get(request.match_info["id"])
        if peer is None:
            raise web.HTTPNotFound(text="no such session\n")
        await peer.aclose()
        self._forget(peer)
        return web.Response(status=200)

    async def whep_post(self, request: web.Request) -> web.Response:
        sdp = await self._read_sdp(request)
        wanted = request.query.get("session")
        peers = [p for p in self.peers.values() if not p.closed.is_set()]
        peer = self.peers.get(wanted) if wanted else (peers[-1] if peers else None)
        if peer is None:
            raise web.HTTPNotFound(text="no session to play\n")
        vid, answer = await peer.add_viewer(
            RTCSessionDescription(sdp=sdp, type="offer"),
            ice_configuration(self.config.ice_servers),
            connect_timeout=self.config.connect_timeout_s,
        )
        self.whep = {v: p for v, p in self.whep.items() if v in p.viewers}  # drop viewers gone on their own
        self.whep[vid] = peer
        return web.Response(
            status=201, text=answer.sdp, content_type="application/sdp", headers={"Location": f"/whep/{vid}"}
        )

    async def whep_delete(self, request: web.Request) -> web.Response:
        vid = request.match_info["id"]
        peer = self.whep.pop(vid, None)
        if peer is None or not await peer.drop_viewer(vid):
            raise web.HTTPNotFound(text="no such viewer\n")
        return web.Response(status=200)

    async def upload(self, request: web.Request) -> web.Response:
        limit = self.config.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            self._refused("too_large")
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        if len(self._uploading) >= self.config.max_uploads_in_flight:  # drop policy: refuse the newest
            self._refused("busy")
            raise web.HTTPServiceUnavailable(text="too many uploads in progress, try again\n")
        if self._upload_dir is None:
            self._upload_dir = tempfile.TemporaryDirectory(prefix="rtdub-uploads-")
        uid = secrets.token_hex(8)
        path = Path(self._upload_dir.name) / f"{uid}.media"
        size = 0
        task = asyncio.current_task()
        assert task is not None
        self._uploading.add(task)
        try:  # streamed to disk; the body's parts are bounded in time (_body_chunks)
            async with contextlib.aclosing(self._body_chunks(request)) as chunks:
                with path.open("wb") as f:
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > limit:
                            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
                        f.write(chunk)
            if size == 0:
                raise InputError("upload", "empty body")
            seconds = await asyncio.get_running_loop().run_in_executor(None, self._probe_upload, path)
        except BaseException as exc:
            path.unlink(missing_ok=True)
            self._refused(_refusal(exc))
            raise
        finally:
            self._uploading.discard(task)
        self.uploads[uid] = (path, seconds)
        while len(self.uploads) > self.config.max_uploads:  # drop policy: oldest upload first
            old = next(iter(self.uploads))
            self.uploads.pop(old)[0].unlink(missing_ok=True)
        logger.info("upload %s stored: %d bytes, %.1f s of audio", uid, size, seconds)
        return web.json_response({"id": uid, "seconds": round(seconds, 3)}, status=201)

    @property
    def upload_dir(self) -> Path | None:
        """Where uploads (and uploads in progress) are written; None before the first one."""
        return Path(self._upload_dir.name) if self._upload_dir is not None else None

    def _refused(self, reason: str) -> None:
        self.uploads_refused[reason] = self.uploads_refused.get(reason, 0) + 1

    def _probe_upload(self, path: Path) -> float:
        """Runs in an executor: decodes (bounded by ``max_upload_seconds``) to check the audio."""
        from .dubsources import AudioTooLong, decode_audio

        limit = self.config.max_upload_seconds
        try:
            wav = decode_audio(path, limit)
        except AudioTooLong as exc:
            declared = "none" if exc.declared is None else f"{exc.declared:.1f} s"
            logger.info(
                "upload refused: audio past %.0f s (declared %s, %d samples decoded)", limit, declared, exc.decoded
            )
            raise web.HTTPRequestEntityTooLarge(
                max_size=limit, actual_size=exc.declared or exc.decoded / 16000, text=f"{exc.problem}\n"
            ) from exc
        except InputError as exc:
            raise web.HTTPUnsupportedMediaType(text=f"not a usable audio file: {exc.problem}\n") from exc
        return float(wav.size / 16000)

    def _resolve_upload(self, uid: str) -> Path:
        if not (len(uid) == 16 and set(uid) <= _ID_CHARS) or uid not in self.uploads:
            raise InputError("dub.id", "unknown upload id")
        return self.uploads[uid][0]

    async def list_models(self, request: web.Request) -> web.Response:
        catalog = self.models
        if catalog is None:
            return web.json_response({"models": []})
        choices = await asyncio.get_running_loop().run_in_executor(None, catalog.choices)  # reads the folder
        return web.json_response({"models": [c.to_dict() for c in choices]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats_dict())

    def stats_dict(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.monotonic() - self._started, 1),
            "sessions": [p.session.stats() | {"viewers": len(p.viewers)} for p in self.peers.values()],
            "uploads": len(self.uploads),
            "uploads_in_flight": len(self._uploading),
            "uploads_refused": dict(self.uploads_refused),
            "connect_timeouts": self.connect_timeouts,
            "viewer_connect_timeouts": self.viewer_connect_timeouts
            + sum(p.viewer_connect_timeouts for p in self.peers.values()),
        }

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> int:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("serving", extra={"host": self.config.host, "port": self.port})
        return self.port

    async def aclose(self) -> None:
        """Cancel uploads in flight, close every peer (and its session), stop serving, delete
        uploads. aiohttp would wait up to a minute for a stalled upload's handler."""
        for task in list(self._uploading):
            task.cancel()
        for peer in list(self.peers.values()):
            await peer.aclose()
        self.peers.clear()
        self.whep.clear()
        for task in list(self._watchers):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._upload_dir is not None:
            shutil.rmtree(self._upload_dir.name, ignore_errors=True)
            self._upload_dir.cleanup()
            self._upload_dir = None
        self.uploads.clear()


def _refusal(exc: BaseException) -> str:
    """The /stats name of why an upload was refused."""
    if isinstance(exc, web.HTTPRequestTimeout):
        return "timed_out"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return "too_long" if isinstance(exc.__cause__, InputError) else "too_large"
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return "not_audio"
    if isinstance(exc, InputError):
        return "empty"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "failed"


async def serve_forever(config: ServeConfig, ready: Callable[[int], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM, then close all peers and leave no task running."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = DubServer(config)
    try:
        port = await server.start()
        if ready is not None:
            ready(port)
        await stop.wait()
        logger.info("shutting down")
    finally:
        await server.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await _finish_tasks()


async def _finish_tasks(timeout: float = 5.0) -> None:
    """Cancel whatever is still running (library tasks that outlive a closed peer) and wait."""
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if not rest:
        return
    logger.warning("cancelling leftover tasks: %s", ", ".join(t.get_name() for t in rest))
    for t in rest:
        t.cancel()
    await asyncio.wait(rest, timeout=timeout)
