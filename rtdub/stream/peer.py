"""One engine-side WebRTC peer: answers an offer, feeds the speaker's video (and audio) into a
:class:`~rtdub.stream.session.DubSession`, and sends the dubbed stream back when asked to.

The dubbed-audio source is picked by a :class:`DubSpec` (the ``dub`` object of ``POST /offer``):
``self`` (the client's own audio, the default), ``track`` (a second audio track the client
sends), ``tts`` (text and voice), ``upload`` (an id from ``POST /uploads``), or ``silence``.

A client may also open a data channel labelled ``rtdub-events`` (``/offer`` and WHIP alike) and
send timed phoneme or viseme events on it (rtdub/stream/eventfeed.py): the lips then follow
them where they reach. Channels with another label are closed and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from ..exceptions import InputError
from .dubsources import ClipSource, DubAudioSource, TrackSource, tts_source
from .eventfeed import EVENTS_LABEL
from .session import DubSession, PipelineFactory, StreamConfig

logger = logging.getLogger(__name__)

SOURCES = ("self", "track", "tts", "upload", "silence")
_ids = itertools.count(1)


@dataclass(frozen=True)
class DubSpec:
    source: str = "self"
    text: str = ""
    voice: str = "en"
    upload: str = ""  # an upload id (resolved by the server, never a path)

    @staticmethod
    def parse(obj: object) -> DubSpec:
        """Validate the ``dub`` object of an offer; InputError on anything unexpected."""
        if obj is None:
            return DubSpec()
        if not isinstance(obj, dict):
            raise InputError("dub", "must be an object")
        source = obj.get("source", "self")
        if source not in SOURCES:
            raise InputError("dub.source", f"must be one of {', '.join(SOURCES)}")
        text = obj.get("text", "")
        voice = obj.get("voice", "en") or "en"
        upload = obj.get("id", "")
        if not all(isinstance(v, str) for v in (text, voice, upload)):
            raise InputError("dub", "text, voice and id must be strings")
        if source == "tts" and not text.strip():
            raise InputError("dub.text", "TTS needs text")
        if len(text) > 2000 or len(voice) > 64:
            raise InputError("dub", "text or voice too long")
        if source == "upload" and not upload:
            raise InputError("dub.id", "an upload id is required")
        return DubSpec(source, text, voice, upload)


class EnginePeer:
    """A peer connection whose incoming video is dubbed. ``send_back``: answer with the dubbed
    tracks on the same connection (``/offer``); otherwise receive only (``/whip``)."""

    def __init__(
        self,
        config: StreamConfig,
        factory: PipelineFactory,
        spec: DubSpec,
        ice: RTCConfiguration,
        send_back: bool = True,
        resolve_upload: Callable[[str], Path] | None = None,
        name: str | None = None,
    ) -> None:
        self.id = name or f"s{next(_ids)}"
        self.spec = spec
        self.send_back = send_back
        self._resolve_upload = resolve_upload
        self.pc = RTCPeerConnection(ice)
        self.session = DubSession(config, factory, name=self.id)
        self.relay = MediaRelay()
        self.viewers: dict[str, RTCPeerConnection] = {}
        self.closed = asyncio.Event()
        self.connected = asyncio.Event()  # ICE and DTLS connected (aiortc's connectionState)
        self._settled = asyncio.Event()  # connected or closed, whichever came first
        self._audio_tracks: list[MediaStreamTrack] = []
        self._drains: set[asyncio.Task[None]] = set()  # drained tracks and viewer deadlines
        self._closing = False
        self.viewer_connect_timeouts = 0
        self.other_channels = 0  # data channels not labelled EVENTS_LABEL (closed)

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.session.upstream is None:
                self.session.set_video(track)
            elif track.kind == "audio":
                self._audio_tracks.append(track)

        @self.pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            if channel.label != EVENTS_LABEL:
                self.other_channels += 1
                logger.info("peer %s: data channel %r closed (%d so far): only %r is read",
                            self.id, channel.label, self.other_channels, EVENTS_LABEL)  # fmt: skip
                channel.close()
                return
            feed = self.session.attach_events()
            channel.on("message", feed.feed)

        @self.pc.on("connectionstatechange")
        async def _on_state() -> None:
            state = self.pc.connectionState
            logger.info("peer %s: %s (ICE %s)", self.id, state, self.pc.iceConnectionState)
            if state == "connected":
                self.connected.set()
                self._settled.set()
            elif state in ("failed", "closed"):
                await self.aclose()

    async def _dub_source(self) -> DubAudioSource | None:
        s = self.spec
        if s.source == "self":
            return TrackSource(self._audio_tracks[0], synchronous=True, name="self") if self._audio_tracks else None
        if s.source == "track":
            if len(self._audio_tracks) < 2:
                raise InputError("dub.source", "'track' needs a second audio track in the offer")
            return TrackSource(self._audio_tracks[1], synchronous=False, name="track")
        if s.source == "tts":
            return await tts_source(s.text, s.voice)
        if s.source == "upload":
            if self._resolve_upload is None:
                raise InputError("dub.id", "uploads are not available here")
            from .dubsources import file_source

            path = self._resolve_upload(s.upload)  # decoding is CPU work: off the loop
            return await asyncio.get_running_loop().run_in_executor(None, file_source, path)
        return ClipSource(np.zeros(0, np.float32), name="silence")

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the client's offer and return the answer (all candidates included)."""
        try:
            await self.pc.setRemoteDescription(offer)
            if self.session.upstream is None:
                raise InputError("offer", "no video track to dub")
            source = await self._dub_source()
            if source is not None:
                self.session.set_dub(source)
            if "m=application" in offer.sdp:  # a data channel may bring events: count the
                self.session.attach_events()  # dubbed audio on their clock from its first sample
            for audio in self._audio_tracks:  # tracks not used as dub audio are drained
                if source is None or getattr(source, "track", None) is not audio:
                    task = asyncio.create_task(drain(audio), name=f"rtdub-drain-{self.id}")
                    self._drains.add(task)
                    task.add_done_callback(self._drains.discard)
            if self.send_back:  # on the first transceiver of each kind the offer has
                done: set[str] = set()
                for t in self.pc.getTransceivers():
                    if t.kind in done or t.kind not in ("audio", "video"):
                        continue
                    done.add(t.kind)
                    track = self.session.video if t.kind == "video" else self.session.audio
                    t.sender.replaceTrack(self.relay.subscribe(track, buffered=False))
                    t.direction = "sendrecv"
            await self.session.start()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except BaseException:
            await self.aclose()
            raise
        return self.pc.localDescription

    async def connect_within(self, timeout: float) -> bool:
        """Wait until ICE and DTLS are connected: True then; False when the peer closed first
        or ``timeout`` seconds passed (the peer is left as it is: the caller decides)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)
        return self.connected.is_set()

    async def add_viewer(
        self, offer: RTCSessionDescription, ice: RTCConfiguration, connect_timeout: float | None = None
    ) -> tuple[str, Any]:
        """A WHEP viewer: a receive-only peer that gets the dubbed tracks. One that is not
        connected ``connect_timeout`` seconds after its answer is dropped."""
        pc = RTCPeerConnection(ice)
        vid = f"v{next(_ids)}"
        self.viewers[vid] = pc
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState == "connected":
                connected.set()
            elif pc.connectionState in ("failed", "closed"):
                await self.drop_viewer(vid)

        try:
            await pc.setRemoteDescription(offer)
            for t in pc.getTransceivers():
                track = self.session.video if t.kind == "video" else self.session.audio
                t.sender.replaceTrack(self.relay.subscribe(track, buffered=False))
                t.direction = "sendonly"
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await self.drop_viewer(vid)
            raise
        if connect_timeout is not None:
            task = asyncio.create_task(self._viewer_deadline(vid, connected, connect_timeout), name=f"rtdub-{vid}")
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        return vid, pc.localDescription

    async def _viewer_deadline(self, vid: str, connected: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(connected.wait(), timeout)
        if not connected.is_set() and await self.drop_viewer(vid):
            self.viewer_connect_timeouts += 1
            logger.warning("peer %s: viewer %s not connected within %.1f s, dropped", self.id, vid, timeout)

    async def drop_viewer(self, vid: str) -> bool:
        pc = self.viewers.pop(vid, None)
        if pc is None:
            return False
        await pc.close()
        return True

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            for vid in list(self.viewers):
                await self.drop_viewer(vid)
            await self.pc.close()
            for task in list(self._drains):
                if task is not asyncio.current_task():
                    task.cancel()
            await self.session.aclose()
        finally:  # whoever waits on the peer (the server's slot) is told even if a close failed
            self.closed.set()
            self._settled.set()


async def drain(track: MediaStreamTrack) -> None:
    """Consume a track nobody else reads (aiortc queues incoming frames without bound)."""
    from aiortc.mediastreams import MediaStreamError

    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            await track.recv()
