"""Where the dubbed audio comes from. Every source implements :class:`DubAudioSource`:

``start(sink, clock)`` begins delivering 16 kHz mono float chunks as ``sink(t, samples)`` with
``t`` on the engine clock; ``aclose()`` stops it and leaves no task running.

- :class:`TrackSource`: a WebRTC audio track, either a second track carrying the
  interpreter's audio (``track``) or the speaker's own audio (``self``). Timed by pts.
- :class:`ClipSource`: a whole clip (a decoded file, an upload, TTS speech), paced in real
  time from a start time and delivered ``lead`` seconds ahead of its play time, as a TTS
  service would. :func:`file_source` and :func:`tts_source` build one.
- :class:`PcmSocketSource`: raw PCM s16le 16 kHz mono over a local socket (TCP on a
  loopback address or a unix socket), timed by arrival and sample count.
- ``rtdub.stream.camera.DeviceSource``: an audio input device (sounddevice).

``synchronous`` says how a source relates to the video: True when its audio belongs to the
same instant as the video (``self``, a scripted clip), so it moves with the dub delay; False
when it already lags by the translation delay (a live interpreter), so it is taken as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from ..audio import SAMPLE_RATE
from ..drive.events import PhoneTimeline, from_speech
from ..exceptions import InputError, RtdubError
from ..tts import Speech
from .localsocket import bound_address, check_loopback, close, listen
from .rings import PtsClock, pts_seconds

logger = logging.getLogger(__name__)

Sink = Callable[[float, np.ndarray], None]
Clock = Callable[[], float]

CHUNK = SAMPLE_RATE // 50  # 20 ms


class DubAudioSource(ABC):
    name: str = "source"
    synchronous: bool = False

    @abstractmethod
    async def start(self, sink: Sink, clock: Clock) -> None:
        """Begin delivering audio to ``sink``; returns once running."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop delivering and release everything."""


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class TrackSource(DubAudioSource):
    """Audio frames from a ``MediaStreamTrack`` (aiortc), resampled to 16 kHz mono."""

    def __init__(self, track: object, synchronous: bool, name: str = "track") -> None:
        self.track = track
        self.synchronous = synchronous
        self.name = name
        self.pts_clock = PtsClock()
        self.frames = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, sink: Sink, clock: Clock) -> None:
        self._task = asyncio.create_task(self._run(sink, clock), name=f"rtdub-dub-{self.name}")

    async def _run(self, sink: Sink, clock: Clock) -> None:
        from aiortc.mediastreams import MediaStreamError

        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            while True:
                frame = await self.track.recv()  # type: ignore[attr-defined]
                arrival = clock()
                for out in resampler.resample(frame):
                    # the resampler carries pts over (in 1/16000): time its output, not its input
                    x = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    if out.pts is None or out.time_base is None:
                        t = arrival
                    else:
                        t = self.pts_clock.map(pts_seconds(out.pts, out.time_base), arrival)
                    sink(t, x)
                self.frames += 1
        except (MediaStreamError, asyncio.CancelledError):
            logger.debug("dub audio track ended", extra={"source": self.name, "frames": self.frames})
        except Exception:
            logger.exception("dub audio track failed", extra={"source": self.name})

    async def aclose(self) -> None:
        await _cancel(self._task)


class ClipSource(DubAudioSource):
    """A whole clip of 16 kHz mono audio played from ``start`` (engine clock, None: now)."""

    synchronous = True

    def __init__(self, samples: np.ndarray, name: str = "clip", lead: float = 0.3, loop: bool = False) -> None:
        self.samples = np.asarray(samples, np.float32).reshape(-1)
        self.name = name
        self.lead = lead
        self.loop = loop
        self.start_time: float | None = None
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, sink: Sink, clock: Clock) -> None:
        if self.start_time is None:
            self.start_time = clock()
        self._task = asyncio.create_task(self._run(sink, clock), name=f"rtdub-dub-{self.name}")

    async def _run(self, sink: Sink, clock: Clock) -> None:
        assert self.start_time is not None
        n = self.samples.size
        if n == 0:
            return
        pos = 0  # samples delivered since start_time (a looped clip keeps counting)
        try:
            while self.loop or pos < n:
                t = self.start_time + pos / SAMPLE_RATE
                wait = t - self.lead - clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                i = pos % n
                chunk = self.samples[i : min(n, i + CHUNK)]
                sink(t, chunk)
                pos += chunk.size
                self.delivered = pos
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("dub clip source failed", extra={"source": self.name})

    async def aclose(self) -> None:
        await _cancel(self._task)


class AudioTooLong(InputError):
    """The audio runs past the limit. ``declared``: the duration the file declares (None when it
    declares none); ``decoded``: the 16 kHz samples decoded before decoding stopped (0 when the
    declared duration refused the file before any decoding)."""

    def __init__(self, path: str, limit_s: float, declared: float | None, decoded: int) -> None:
        said = f"declares {declared:.1f} s" if declared is not None and decoded == 0 else "runs past it"
        super().__init__(path, f"audio longer than {limit_s:g} s ({said})")
        self.limit_s = limit_s
        self.declared = declared
        self.decoded = decoded


# A declared duration is the demuxer's reading or estimate (Ogg: the last granule; MP3 without a
# header: from the bit rate), so it refuses only beyond this slack; the decode bound is exact.
DECLARED_SLACK_S = 1.0


def declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """The audio stream's duration as the file declares it (the stream's, else the container's)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    return None


def decode_audio(path: str | os.PathLike[str], max_seconds: float = 600.0) -> np.ndarray:
    """Decode a media file's first audio stream to 16 kHz mono (on :func:`rtdub.media.load_audio`'s
    timeline), holding at most ``max_seconds`` of it: a declared duration over the limit is
    refused before anything is decoded, and decoding stops at the first frame past the limit
    (:class:`AudioTooLong`, an InputError). InputError when there is no usable audio.

    CPU-bound (up to ``max_seconds`` of decoding): call it off the event loop."""
    from ..media import _first_frame_time, _open

    limit = int(math.ceil(max_seconds * SAMPLE_RATE))
    chunks: list[np.ndarray] = []
    n = 0
    first: float | None = None
    with _open(path) as c:
        if not c.streams.audio:
            raise InputError(str(path), "no audio stream")
        stream = c.streams.audio[0]
        declared = declared_seconds(c, stream)
        if declared is not None and declared > max_seconds + DECLARED_SLACK_S:
            raise AudioTooLong(str(path), max_seconds, declared, 0)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in itertools.chain(c.decode(stream), [None]):
                if frame is not None and first is None and frame.time is not None:
                    first = float(frame.time)
                for out in resampler.resample(frame):
                    x = out.to_ndarray().reshape(-1)
                    n += x.size
                    if n > limit:  # stop here: never hold more than the limit
                        raise AudioTooLong(str(path), max_seconds, declared, n)
                    chunks.append(x)
        except av.error.FFmpegError as exc:
            raise InputError(str(path), f"audio stream cannot be decoded ({exc})") from exc
        has_video = bool(c.streams.video)
    if n == 0:
        raise InputError(str(path), "audio stream holds no samples")
    lead = int(round((first - _first_frame_time(path)) * SAMPLE_RATE)) if has_video and first is not None else 0
    if lead + n > limit:  # audio that starts late would be preceded by that much silence
        raise AudioTooLong(str(path), max_seconds, declared, n)
    wav = np.concatenate(chunks).astype(np.float32, copy=False)
    if lead > 0:
        return np.concatenate([np.zeros(lead, np.float32), wav])
    if -lead >= wav.size:
        raise InputError(str(path), "audio stream ends before the video starts")
    return wav[-lead:] if lead < 0 else wav


def file_source(path: str | os.PathLike[str], loop: bool = False) -> ClipSource:
    return ClipSource(decode_audio(path), name=f"file:{Path(path).name}", loop=loop)


class TtsSource(ClipSource):
    """Speech synthesised by rtdub's own TTS (espeak-ng), played as a clip; it also knows when
    each phoneme sounds, so the session can drive the lips from those events
    (:meth:`timeline`) instead of recognising them in the audio."""

    def __init__(self, speech: Speech, name: str = "tts", lead: float = 0.3) -> None:
        speech = speech.resampled(SAMPLE_RATE)
        super().__init__(speech.samples, name=name, lead=lead)
        self.speech = speech

    def timeline(self) -> PhoneTimeline:
        """The phonemes as visual classes on the engine clock (the clip's start + their
        times); call it once the source has started."""
        if self.start_time is None:
            raise RuntimeError("the TTS source has not started: its events have no clock yet")
        tl = from_speech(self.speech)
        s = self.start_time
        return PhoneTimeline(tl.starts + s, tl.ends + s, tl.classes, tl.source, tl.mapped)


async def tts_source(text: str, voice: str = "en") -> TtsSource:
    """Synthesize ``text`` (off the event loop) and wrap it as a clip with its phoneme events."""
    from .. import tts

    if len(text) > 2000:
        raise RtdubError("TTS text longer than 2000 characters")
    speech = await asyncio.get_running_loop().run_in_executor(None, tts.synthesize, text, voice)
    return TtsSource(speech, name=f"tts:{voice}")


class PcmSocketSource(DubAudioSource):
    """Raw PCM (s16le, 16 kHz, mono) from one client at a time over a local socket.

    ``address`` is ``("127.0.0.1", port)`` for TCP (port 0 picks one; only loopback hosts are
    accepted) or a filesystem path for a unix socket. Chunks are timed by arrival and sample
    count: a client that pauses for over ``resync`` seconds is re-anchored at the clock (the
    pause becomes silence); a client that sends faster than real time is held back (TCP
    backpressure) once ``max_lead`` seconds ahead, so nothing here grows without bound."""

    synchronous = False

    def __init__(
        self, address: tuple[str, int] | str, resync: float = 0.1, max_lead: float = 2.0, name: str = "socket"
    ) -> None:
        check_loopback(address, "PCM sockets")
        self.address = address
        self.resync = resync
        self.max_lead = max_lead
        self.name = name
        self.received = 0
        self.resyncs = 0
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._busy = False

    @property
    def bound(self) -> tuple[str, int] | str:
        """The listening address (with the real port when 0 was asked for)."""
        return bound_address(self._server, self.address)

    async def start(self, sink: Sink, clock: Clock) -> None:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._clients.add(task)
            try:
                if self._busy:  # one speaker at a time
                    return
                self._busy = True
                try:
                    await self._serve(reader, sink, clock)
                finally:
                    self._busy = False
            finally:
                writer.close()
                self._clients.discard(task)

        self._server = await listen(client, self.address)

    async def _serve(self, reader: asyncio.StreamReader, sink: Sink, clock: Clock) -> None:
        anchor: float | None = None
        count = 0
        carry = b""
        try:
            while True:
                data = await reader.read(4 * CHUNK)
                if not data:
                    return
                data = carry + data
                usable = len(data) - len(data) % 2
                carry = data[usable:]
                x = np.frombuffer(data[:usable], "<i2").astype(np.float32) / 32768.0
                now = clock()
                if anchor is None or anchor + count / SAMPLE_RATE < now - self.resync:
                    if anchor is not None:
                        self.resyncs += 1
                    anchor, count = now, 0
                t = anchor + count / SAMPLE_RATE
                sink(t, x)
                count += x.size
                self.received += x.size
                ahead = anchor + count / SAMPLE_RATE - now
                if ahead > self.max_lead:
                    await asyncio.sleep(ahead - self.max_lead)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("PCM socket client failed")

    async def aclose(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await close(server, self._clients, self.address)
