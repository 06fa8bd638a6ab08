"""Media sources as aiortc tracks, paced in real time: frames or samples held in memory
(generated clips for tests, benchmarks and demos) and media files.

pts are counted at 90 kHz for video and at the sample rate for audio, from 0, as aiortc's
own sources do. Each track ends (``MediaStreamError``) after its last frame unless looped.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable, Sequence

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class _Paced:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._t0: float | None = None

    def stamp(self, i: int, fps: float, sent_at: dict[int, float]) -> tuple[int, fractions.Fraction]:
        """pts and time base of video frame ``i``; records its hand-off time in ``sent_at``
        (bounded: the oldest half is dropped past 2000 entries)."""
        pts = int(round(i * VIDEO_CLOCK / fps))
        sent_at[pts] = self._clock()
        if len(sent_at) > 2000:
            for k in list(sent_at)[:1000]:
                del sent_at[k]
        return pts, VIDEO_TIME_BASE

    async def at(self, offset: float) -> None:
        if self._t0 is None:
            self._t0 = self._clock()
        wait = self._t0 + offset - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)


class FramesTrack(MediaStreamTrack):
    """RGB frames (a sequence, or a callable ``index -> frame`` for endless sources)."""

    kind = "video"

    def __init__(
        self,
        frames: Sequence[np.ndarray] | Callable[[int], np.ndarray | None],
        fps: float = 25.0,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._frames = frames
        self.fps = fps
        self.loop = loop
        self._pace = _Paced(clock)
        self.index = 0
        self.sent_at: dict[int, float] = {}  # pts -> clock time it was handed out (bounded below)

    def _get(self, i: int) -> np.ndarray | None:
        if callable(self._frames):
            return self._frames(i)
        n = len(self._frames)
        if i >= n and not self.loop:
            return None
        return self._frames[i % n]

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        i = self.index
        image = self._get(i)
        if image is None:
            self.stop()
            raise MediaStreamError
        await self._pace.at(i / self.fps)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = self._pace.stamp(i, self.fps, self.sent_at)
        self.index += 1
        return frame


class PacketsTrack(MediaStreamTrack):
    """Encoded video packets (e.g. VP8 ``av.Packet``), paced at ``fps`` and looped, ``count``
    of them in all (None: endless): aiortc's sender packetises them without encoding. The
    first packet must be a key frame (so the loop restarts cleanly); key-frame requests from
    the receiver cannot be honoured."""

    kind = "video"

    def __init__(
        self,
        packets: Sequence[bytes],
        fps: float = 25.0,
        count: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if not packets:
            raise ValueError("no packets")
        self._packets = packets
        self.count = count
        self.fps = fps
        self._pace = _Paced(clock)
        self.index = 0
        self.sent_at: dict[int, float] = {}  # pts -> clock time it was handed out (bounded below)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        i = self.index
        if self.count is not None and i >= self.count:
            self.stop()
            raise MediaStreamError
        await self._pace.at(i / self.fps)
        packet = av.Packet(self._packets[i % len(self._packets)])
        packet.pts, packet.time_base = self._pace.stamp(i, self.fps, self.sent_at)
        self.index += 1
        return packet


class PcmTrack(MediaStreamTrack):
    """Mono float samples as 20 ms s16 audio frames."""

    kind = "audio"

    def __init__(
        self,
        samples: np.ndarray,
        rate: int = 16000,
        loop: bool = False,
        pad_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        x = np.asarray(samples, np.float32).reshape(-1)
        if pad_seconds > 0:  # silence after the clip (keeps the track alive)
            x = np.concatenate([x, np.zeros(int(pad_seconds * rate), np.float32)])
        self.samples = x
        self.rate = rate
        self.loop = loop
        self._n = rate // 50
        self._pace = _Paced(clock)
        self._pos = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n, total = self._n, self.samples.size
        if self._pos >= total and not self.loop:
            self.stop()
            raise MediaStreamError
        await self._pace.at(self._pos / self.rate)
        idx = (self._pos + np.arange(n)) % total if self.loop else np.arange(self._pos, self._pos + n)
        chunk = np.zeros(n, np.float32)
        valid = idx < total
        chunk[valid] = self.samples[idx[valid]]
        pcm = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pos
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pos += n
        return frame
