"""Ring buffers, the pts-to-clock mapping and the dubbed-audio timeline."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from rtdub import audio
from rtdub.stream.dubaudio import DubAudioTimeline
from rtdub.stream.rings import AudioRing, PtsClock, VideoRing, pts_seconds

from .factories import speechlike


def test_video_ring_drops_oldest_by_duration_and_counts() -> None:
    ring: VideoRing[int] = VideoRing(max_duration=0.2, max_frames=100)
    for i in range(10):
        assert ring.push(i * 0.04, i)
    # 0.2 s at 25 fps: frames 4..9 remain (span 0.2), the four oldest were dropped
    assert [x.item for x in ring] == [4, 5, 6, 7, 8, 9]
    assert ring.dropped_overflow == 4
    assert ring.span == pytest.approx(0.2)


def test_video_ring_frame_bound_and_out_of_order() -> None:
    ring: VideoRing[str] = VideoRing(max_duration=10, max_frames=3)
    for i, name in enumerate("abcde"):
        ring.push(float(i), name)
    assert [x.item for x in ring] == ["c", "d", "e"]
    assert ring.dropped_overflow == 2
    assert not ring.push(3.5, "late")  # older than the newest: refused
    assert not ring.push(4.0, "dup")
    assert ring.dropped_out_of_order == 2
    assert len(ring) == 3


def test_pop_through_returns_newest_due_and_counts_stale() -> None:
    ring: VideoRing[int] = VideoRing(max_duration=5)
    for i in range(5):
        ring.push(i * 0.04, i, arrival=i * 0.04 + 0.01)
    last, stale = ring.pop_through(0.1)
    assert last is not None and last.item == 2 and stale == 2
    assert last.arrival == pytest.approx(0.09)
    assert [x.item for x in ring] == [3, 4]
    assert ring.pop_through(0.0) == (None, 0)


def test_audio_ring_gap_overlap_and_overflow() -> None:
    ring = AudioRing(max_duration=0.01, rate=1000)  # 10 samples
    ring.write(100, np.arange(4, dtype=np.float32) + 1)  # samples 100..103
    gap, acc = ring.write(106, np.full(2, 9, np.float32))  # 104, 105 missing -> silence
    assert gap == 2 and ring.gap_samples == 2 and acc.size == 2
    np.testing.assert_array_equal(ring.read(100, 8), [1, 2, 3, 4, 0, 0, 9, 9])
    gap, acc = ring.write(107, np.full(3, 7, np.float32))  # 107 already written: its head is cut
    assert gap == 0 and acc.size == 2 and ring.dropped_overlap == 1
    np.testing.assert_array_equal(ring.read(106, 4), [9, 9, 7, 7])
    assert ring.end == 110
    ring.write(110, np.full(5, 5, np.float32))  # 15 samples written, capacity 10: 5 oldest dropped
    assert ring.dropped_overflow == 5 and ring.start == 105
    np.testing.assert_array_equal(ring.read(103, 4), [0, 0, 0, 9])  # 103, 104 are gone
    # a jump far past capacity: everything held is dropped, the jump reads as silence
    ring.write(1000, np.ones(3, np.float32))
    assert ring.start == 1000 - 0 and ring.end == 1003
    np.testing.assert_array_equal(ring.read(995, 8), [0, 0, 0, 0, 0, 1, 1, 1])


def test_audio_ring_wraps_around_many_times() -> None:
    ring = AudioRing(max_duration=0.05, rate=1000)  # 50 samples
    x = np.arange(1037, dtype=np.float32)
    for s0 in range(0, x.size, 13):
        ring.write(s0, x[s0 : s0 + 13])
    np.testing.assert_array_equal(ring.read(1037 - 50, 50), x[-50:])
    assert ring.dropped_overflow == 1037 - 50


def test_pts_clock_maps_by_pts_not_by_count() -> None:
    clk = PtsClock()
    tb = Fraction(1, 90000)
    # irregular frame spacing and jittered arrival: the mapping follows the pts exactly
    pts = [0, 3600, 9000, 10800, 18000]
    jitter = [0.0, 0.015, 0.002, 0.03, 0.01]
    out = [clk.map(pts_seconds(p, tb), 100.0 + p / 90000 + j) for p, j in zip(pts, jitter, strict=True)]
    np.testing.assert_allclose(np.diff(out), np.diff(pts) / 90000, atol=1e-9)
    assert out[0] == pytest.approx(100.0)


def test_pts_clock_reanchors_on_discontinuity() -> None:
    clk = PtsClock()
    assert clk.map(10.0, 5.0) == pytest.approx(5.0)
    assert clk.map(10.04, 5.04) == pytest.approx(5.04)
    assert clk.map(0.0, 5.08) == pytest.approx(5.08)  # a restarted stream: pts went backwards
    assert clk.map(500.0, 5.12) == pytest.approx(5.12)  # a jump forward
    assert clk.reanchors == 2


def test_pts_clock_no_drift_over_three_hours() -> None:
    """The sender's clock runs 80 ppm fast and arrivals jitter by up to 30 ms: after three
    hours the mapped times still match the earliest arrivals within one frame (uncorrected, the
    skew alone would add up to 0.86 s)."""
    rng = np.random.default_rng(1)
    clk = PtsClock()
    fps, hours = 25, 3
    n = fps * 3600 * hours
    worst = 0.0
    for i in range(0, n, 5):  # every 5th frame keeps the test fast
        true = i / fps  # receiver clock
        pts = true * (1 + 80e-6)  # sender clock
        arrival = 50.0 + true + 0.01 + rng.uniform(0, 0.03)
        t = clk.map(pts, arrival)
        if i > fps * 60:
            worst = max(worst, abs(t - (50.0 + true + 0.01)))
    assert worst < 1 / fps
    assert clk.corrections > 0 and clk.reanchors == 0


def test_timeline_mel_matches_whole_signal_at_any_offset() -> None:
    wav = speechlike(1.5, seed=2)
    tl = DubAudioTimeline(max_duration=5.0)
    t0 = 12.3456  # not on a hop boundary
    for s0 in range(0, wav.size, 320):
        tl.write(t0 + s0 / audio.SAMPLE_RATE, wav[s0 : s0 + 320])
    i0 = int(round(t0 * audio.SAMPLE_RATE))
    pad = i0 % audio.HOP
    ref = audio.melspectrogram(np.concatenate([np.zeros(pad, np.float32), audio.normalize_loudness(wav)]))
    origin = (i0 - pad) // audio.HOP
    snap = tl.snapshot(t0 + 0.8, 0.1, 24)
    m = int(round((t0 + 0.8) * audio.MEL_FPS))
    got = snap.frames(m - 16, m + 8)
    np.testing.assert_allclose(got, ref[m - 16 - origin : m + 8 - origin], atol=1e-4)
    assert tl.ring.gap_samples == 0 and tl.ring.dropped_overlap == 0


def test_timeline_missing_audio_is_silence_and_lookahead_is_what_is_buffered() -> None:
    tl = DubAudioTimeline(max_duration=5.0)
    assert tl.available_lookahead(1.0, 0.1) == 0.0
    tl.write(1.0, speechlike(0.5, seed=1) * 4)
    end = 1.5
    assert tl.available_lookahead(1.2, 0.1) == pytest.approx(0.1)
    assert tl.available_lookahead(1.45, 0.1) == pytest.approx(end - 0.025 - 1.45)
    assert tl.available_lookahead(2.0, 0.1) == 0.0
    # after the written audio (late or missing), the mel reads as silence
    snap = tl.snapshot(2.0, 0.0, 24)
    m = int(round(2.0 * audio.MEL_FPS))
    assert np.all(snap.frames(m - 8, m + 2) == audio.SILENCE_MEL)
    # a gap is silence, and writing continues after it
    tl.write(3.0, np.full(1600, 0.2, np.float32))
    assert tl.ring.gap_samples == int(1.5 * audio.SAMPLE_RATE)
    assert np.all(tl.read(2.0, 1600) == 0) and np.all(tl.read(3.0, 1600) != 0)
