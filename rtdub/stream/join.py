"""``rtdub join``: take part in a session hosted elsewhere. Pull the speaker's stream from a
WHEP endpoint, dub it (its own audio is the dubbed audio unless a second audio track comes),
and publish the dubbed stream to a WHIP endpoint. Runs until SIGINT/SIGTERM or until either
side ends, then DELETEs both resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from ..exceptions import RtdubError
from .dubsources import PcmSocketSource, TrackSource
from .eventsocket import EventSocket
from .peer import drain
from .session import DubSession, PipelineFactory, StreamConfig
from .webrtc import delete_resource, ice_configuration, offer_to

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JoinConfig:
    whep: str
    whip: str
    token: str | None = None
    stream: StreamConfig = field(default_factory=StreamConfig)
    ice_servers: tuple[str, ...] = ()
    track_timeout: float = 10.0
    dub_socket: tuple[str, int] | str | None = None  # dubbed audio over a local socket instead
    events_socket: tuple[str, int] | str | None = None  # its phoneme or viseme events (eventsocket)


class Joiner:
    """Lifecycle: ``await start()``, ``await aclose()``; ``ended`` is set when a side ends."""

    def __init__(self, config: JoinConfig, factory: PipelineFactory | None = None) -> None:
        self.config = config
        self.session = DubSession(config.stream, factory, name="join")
        self.pull = RTCPeerConnection(ice_configuration(config.ice_servers))
        self.push = RTCPeerConnection(ice_configuration(config.ice_servers))
        self.ended = asyncio.Event()
        self._pull_resource: str | None = None
        self._push_resource: str | None = None
        self._tracks: dict[str, MediaStreamTrack] = {}
        self._got_video = asyncio.Event()
        self._drain: asyncio.Task[None] | None = None
        self.events: EventSocket | None = None

        @self.pull.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self._tracks.setdefault(track.kind, track)
            if track.kind == "video":
                self._got_video.set()

        for pc in (self.pull, self.push):
            pc.on("connectionstatechange", self._state_handler(pc))

    def _state_handler(self, pc: RTCPeerConnection) -> Callable[[], Awaitable[None]]:
        async def changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.ended.set()

        return changed

    async def start(self) -> None:
        c = self.config
        self.pull.addTransceiver("video", direction="recvonly")
        self.pull.addTransceiver("audio", direction="recvonly")
        pulled = await offer_to(c.whep, self.pull, c.token)
        self._pull_resource = pulled.resource
        try:
            await asyncio.wait_for(self._got_video.wait(), c.track_timeout)
        except asyncio.TimeoutError as exc:
            raise RtdubError(f"{c.whep}: no video track arrived") from exc
        self.session.set_video(self._tracks["video"])
        if c.dub_socket is not None:
            self.session.set_dub(PcmSocketSource(c.dub_socket))
            if "audio" in self._tracks:
                self._drain = asyncio.create_task(drain(self._tracks["audio"]), name="rtdub-join-drain")
        elif "audio" in self._tracks:
            self.session.set_dub(TrackSource(self._tracks["audio"], synchronous=True, name="self"))
        if c.events_socket is not None:
            self.events = EventSocket(c.events_socket, self.session.attach_events())
            await self.events.start()
        await self.session.start()
        self.push.addTransceiver(self.session.video, direction="sendonly")
        self.push.addTransceiver(self.session.audio, direction="sendonly")
        pushed = await offer_to(c.whip, self.push, c.token)
        self._push_resource = pushed.resource
        logger.info("joined", extra={"whep": c.whep, "whip": c.whip, "resource": pushed.resource})

    async def aclose(self) -> None:
        for res in (self._push_resource, self._pull_resource):
            if res is not None:
                await delete_resource(res, self.config.token)
        self._push_resource = self._pull_resource = None
        if self._drain is not None:
            self._drain.cancel()
        if self.events is not None:
            await self.events.aclose()
        await self.push.close()
        await self.pull.close()
        await self.session.aclose()


async def join_forever(config: JoinConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    joiner = Joiner(config)
    try:
        await joiner.start()
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(joiner.ended.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
    finally:
        await joiner.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
