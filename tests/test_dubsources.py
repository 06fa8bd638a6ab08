"""Dubbed-audio sources behind one interface: PCM over a local socket (TCP and unix), TTS,
clips, and WebRTC audio tracks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rtdub.exceptions import InputError
from rtdub.stream.dubsources import ClipSource, PcmSocketSource, TrackSource, tts_source
from rtdub.stream.mediatracks import PcmTrack

from .factories import speechlike


class Collector:
    def __init__(self) -> None:
        self.chunks: list[tuple[float, np.ndarray]] = []
        self.at: list[float] = []  # clock time each chunk came

    def __call__(self, t: float, x: np.ndarray) -> None:
        self.chunks.append((t, x.copy()))
        self.at.append(time.monotonic())

    def samples(self) -> np.ndarray:
        return np.concatenate([x for _, x in self.chunks]) if self.chunks else np.zeros(0, np.float32)

    def contiguous(self) -> bool:
        return all(
            abs(t1 - (t0 + x0.size / 16000)) < 1e-6
            for (t0, x0), (t1, _) in zip(self.chunks, self.chunks[1:], strict=False)
        )


def _pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


async def _eventually(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)


async def test_pcm_over_tcp_is_timed_by_sample_count_with_backpressure() -> None:
    src = PcmSocketSource(("127.0.0.1", 0), max_lead=0.3)
    sink = Collector()
    await src.start(sink, time.monotonic)
    bound = src.bound
    assert isinstance(bound, tuple)
    host, port = bound
    x = speechlike(1.5, seed=7)
    _, writer = await asyncio.open_connection(host, port)
    writer.write(_pcm(x))  # all at once: far faster than real time
    t0 = time.monotonic()
    await asyncio.sleep(0.5)
    got = sink.samples().size
    assert got < (0.5 + 0.3 + 0.15) * 16000  # held back: at most max_lead ahead of the clock
    await _eventually(lambda: sink.samples().size == x.size)
    assert time.monotonic() - t0 > 1.5 - 0.3 - 0.1
    np.testing.assert_allclose(sink.samples(), np.round(np.clip(x, -1, 1) * 32767) / 32768, atol=1e-4)
    assert sink.contiguous() and src.resyncs == 0
    writer.close()
    await src.aclose()


async def test_pcm_pause_resyncs_to_the_clock_and_unix_sockets_work(tmp_path: Path) -> None:
    path = str(tmp_path / "dub.sock")
    src = PcmSocketSource(path, resync=0.1)
    sink = Collector()
    await src.start(sink, time.monotonic)
    _, writer = await asyncio.open_unix_connection(path)
    writer.write(_pcm(np.full(1600, 0.25, np.float32)))  # 0.1 s
    await writer.drain()
    await _eventually(lambda: sink.samples().size == 1600)
    await asyncio.sleep(0.5)  # the speaker pauses
    writer.write(_pcm(np.full(1600, 0.5, np.float32)))
    await writer.drain()
    await _eventually(lambda: sink.samples().size == 3200)
    assert src.resyncs == 1
    k = next(i for i, (_, x) in enumerate(sink.chunks) if x[0] > 0.4)  # first chunk after the pause
    assert sink.chunks[k][0] - sink.chunks[0][0] > 0.5  # the pause is kept (as silence), not squeezed out
    assert abs(sink.chunks[k][0] - sink.at[k]) < 0.05  # re-anchored at its arrival
    writer.close()
    await src.aclose()
    assert "dub.sock" not in os.listdir(tmp_path)  # the socket file is removed


def test_pcm_sockets_listen_on_loopback_only() -> None:
    with pytest.raises(InputError, match="loopback"):
        PcmSocketSource(("0.0.0.0", 9000))
    PcmSocketSource(("::1", 0))


async def test_tts_source_arrives_ahead_of_play_time_but_bounded() -> None:
    src = await tts_source("Hello there, how are you today?", "en")
    assert isinstance(src, ClipSource) and src.samples.size > 16000
    src.lead = 0.2
    sink = Collector()
    start = time.monotonic() + 0.1
    src.start_time = start
    await src.start(sink, time.monotonic)
    await asyncio.sleep(0.6)
    await src.aclose()
    assert sink.contiguous() and sink.chunks[0][0] == pytest.approx(start)
    ahead = [t - at for (t, _), at in zip(sink.chunks, sink.at, strict=True)]
    assert max(ahead) <= 0.2 + 0.03 and np.mean(ahead) > 0.1  # ahead of play time by the lead
    assert sink.chunks[-1][0] < time.monotonic() + 0.25


async def test_track_source_maps_pts_and_resamples() -> None:
    x = speechlike(0.6, seed=8)
    from scipy.signal import resample_poly

    track = PcmTrack(resample_poly(x, 3, 1).astype(np.float32), rate=48000)
    src = TrackSource(track, synchronous=True, name="self")
    sink = Collector()
    await src.start(sink, time.monotonic)
    await _eventually(lambda: sink.samples().size >= x.size - 400)
    await src.aclose()
    y = sink.samples()
    assert y.size >= x.size - 400 and sink.contiguous()
    n = min(x.size, y.size) - 200
    lag = int(np.argmax(np.correlate(y[:n], x[:n], "full"))) - (n - 1)
    assert abs(lag) < 40  # resampler delay only
    assert np.corrcoef(y[100 + max(lag, 0) : n], x[100 - min(lag, 0) : n - lag])[0, 1] > 0.95
