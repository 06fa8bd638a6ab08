"""Events an external TTS streams beside the dubbed audio: the growing timeline's bounds, the
wire format and its refusals, the dubbed audio's sample clock, and the drive's fade when the
events stop (rtdub/drive/livetimeline.py, rtdub/stream/eventfeed.py)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from rtdub.drive.livetimeline import ACCEPTED, LATE, OUT_OF_ORDER, TOO_FAR, LiveTimeline, LiveTimelineConfig
from rtdub.drive.phones import BILABIAL, N_CLASSES, OPEN, PAUSE, ROUNDED
from rtdub.drive.phonetic import PhoneticConfig, PhoneticDrive, PhoneticModel
from rtdub.stream.eventfeed import AudioPositions, EventFeed, EventFeedConfig
from rtdub.stream.liveloudness import LiveLoudness


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- the timeline ------------------------------------------------------------------------


def test_a_point_mark_lasts_until_the_next_and_the_newest_is_provisional() -> None:
    tl = LiveTimeline(LiveTimelineConfig(last_mark_s=0.15))
    assert tl.add_mark(0.0, OPEN) == ACCEPTED
    assert tl.frontier == pytest.approx(0.15)
    assert tl.add_mark(0.4, BILABIAL) == ACCEPTED  # later than the provisional end: it stretches
    snap = tl.snapshot()
    np.testing.assert_allclose(snap.starts, [0.0, 0.4])
    np.testing.assert_allclose(snap.ends, [0.4, 0.55])
    assert list(snap.classes) == [OPEN, BILABIAL]
    assert tl.add_mark(0.3, OPEN) == OUT_OF_ORDER  # before the newest mark
    assert tl.add_span(0.5, 0.7, ROUNDED) == ACCEPTED  # closes the open mark at 0.5
    snap = tl.snapshot()
    np.testing.assert_allclose(snap.ends, [0.4, 0.5, 0.7])
    assert tl.add_span(0.65, 0.8, OPEN) == OUT_OF_ORDER


def test_old_events_are_dropped_behind_the_playhead_and_the_count_is_bounded() -> None:
    tl = LiveTimeline(LiveTimelineConfig(keep_s=1.0, max_events=50, max_ahead_s=5.0))
    for k in range(40):
        assert tl.add_span(k * 0.1, k * 0.1 + 0.1, OPEN) == ACCEPTED
    tl.advance(3.01)  # events ending before 2.01 s go
    assert tl.dropped_old == 20 and len(tl) == 20
    assert tl.snapshot().span == pytest.approx((2.0, 4.0))
    assert tl.add_span(3.95, 4.1, OPEN) == OUT_OF_ORDER
    assert tl.add_span(8.5, 8.6, OPEN) == TOO_FAR  # past playhead + max_ahead_s: refused
    assert tl.add_span(4.0, 4.1, OPEN) == ACCEPTED  # ... and later events still fit
    for k in range(100):
        tl.add_span(4.1 + k * 0.01, 4.11 + k * 0.01, PAUSE)
    assert len(tl) == 50 and tl.dropped_overflow == 71
    assert tl.add_span(5.2, 5.3, OPEN) == ACCEPTED
    assert tl.add_span(5.3, 5.4, OPEN) == ACCEPTED
    tl.advance(7.0)
    assert tl.add_span(5.5, 5.6, OPEN) == LATE  # kept (in order), but its frames are gone


def test_a_reset_cuts_the_events_past_the_new_origin() -> None:
    tl = LiveTimeline()
    tl.add_span(0.0, 1.0, OPEN)
    tl.add_span(1.0, 2.0, ROUNDED)
    tl.add_mark(2.0, BILABIAL)
    tl.reset(1.5)
    snap = tl.snapshot()
    np.testing.assert_allclose(snap.starts, [0.0, 1.0])
    np.testing.assert_allclose(snap.ends, [1.0, 1.5])
    assert tl.add_mark(1.5, OPEN) == ACCEPTED


def test_a_snapshot_mapped_through_a_clock_that_steps_back_stays_in_order() -> None:
    tl = LiveTimeline()
    for k in range(4):
        tl.add_span(k * 0.5, k * 0.5 + 0.5, OPEN)

    def stepped(p: np.ndarray) -> np.ndarray:
        return np.where(p >= 1.0, p - 0.3, p) + 10.0  # audio from 1.0 s overlapped by 0.3 s

    snap = tl.snapshot(stepped)  # PhoneTimeline checks order itself
    assert snap.span == pytest.approx((10.0, 11.7))


# --- the wire and the clock ----------------------------------------------------------------


def test_the_three_notations_and_their_times() -> None:
    feed = EventFeed(EventFeedConfig(), _Clock())
    assert feed.feed(json.dumps({"time": 0, "type": "viseme", "value": "p"})) == "events"
    assert feed.feed(json.dumps({"time": 120, "type": "word", "value": "Bob"})) == "ignored"
    assert feed.feed(json.dumps({"audioOffset": 1_500_000, "visemeId": 2})) == "events"  # 0.15 s
    assert feed.feed(b'{"start": 0.3, "end": 0.5, "phoneme": "u"}') == "events"
    snap = feed.timeline.snapshot()
    np.testing.assert_allclose(snap.starts, [0.0, 0.15, 0.3])
    np.testing.assert_allclose(snap.ends, [0.15, 0.3, 0.5])
    assert list(snap.classes) == [BILABIAL, OPEN, ROUNDED]
    c = feed.counts
    assert (c.messages, c.events, c.ignored, c.refused) == (4, 3, 1, 0)


def test_bad_oversize_and_flooding_messages_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    feed = EventFeed(EventFeedConfig(max_message_bytes=256, rate=10.0, burst=20), clock)
    bad = [
        "not json",
        b"\xff\xfe{}",
        "[1, 2]",
        '{"time": 5}',
        '{"start": 1, "end": 0.5, "phoneme": "a"}',
        '{"audioOffset": 1, "visemeId": 99}',
        '{"reset": "yes"}',
        "[" * 100 + "]" * 100,
    ]
    with caplog.at_level(logging.WARNING, "rtdub.stream.eventfeed"):
        for m in bad:
            assert feed.feed(m) == "bad"
        assert feed.feed('{"start": 0, "end": 0.1, "phoneme": "' + "a" * 300 + '"}') == "oversize"
    assert feed.counts.bad == len(bad) and feed.counts.oversize == 1
    assert "message 9 refused (oversize: 3" in caplog.text and "9 refused so far" in caplog.text
    # a burst past the bucket (20, of which the 8 bad messages took 8) is dropped; it refills with time
    results = [feed.feed(json.dumps({"start": k * 0.1, "end": k * 0.1 + 0.1, "phoneme": "a"})) for k in range(20)]
    assert results == ["events"] * 12 + ["rate_limited"] * 8
    clock.t += 1.0
    assert feed.feed('{"start": 5, "end": 5.1, "phoneme": "a"}') == "events"
    assert feed.counts.messages == 30


def test_event_times_count_samples_of_the_dubbed_audio_not_the_wall_clock() -> None:
    feed = EventFeed(EventFeedConfig(), _Clock())
    feed.note_audio(50.0, 16000)  # 1 s of audio written from engine time 50
    feed.note_audio(51.0, 8000)  # contiguous
    feed.note_audio(53.0, 8000)  # a paused client re-anchored 1.5 s later
    feed.feed('{"start": 0.5, "end": 1.0, "phoneme": "a"}')
    feed.feed('{"start": 1.0, "end": 1.6, "phoneme": "m"}')  # crosses the pause
    snap = feed.at(50.0)
    assert snap is not None
    np.testing.assert_allclose(snap.starts, [50.5, 51.0])
    np.testing.assert_allclose(snap.ends, [51.0, 53.1])
    assert feed.positions.to_position(53.25) == pytest.approx(1.75)


def test_a_reset_starts_a_new_utterance_at_the_next_sample() -> None:
    feed = EventFeed(EventFeedConfig(), _Clock())
    feed.note_audio(10.0, 32000)  # 2 s
    for t in (0, 500, 1000, 1500):
        feed.feed(json.dumps({"time": t, "type": "viseme", "value": "a"}))
    assert feed.feed('{"reset": true}') == "resets"
    feed.feed(json.dumps({"time": 0, "type": "viseme", "value": "p"}))  # Polly's time restarts at 0
    feed.note_audio(12.0, 16000)
    snap = feed.at(12.0)
    assert snap is not None
    assert snap.starts[-1] == pytest.approx(12.0) and snap.classes[-1] == BILABIAL
    assert snap.ends[-2] == pytest.approx(11.65)  # the old open mark, closed by the reset
    assert feed.feed('{"reset": true, "origin": 5.0}') == "resets"
    assert feed.feed(json.dumps({"time": 100, "type": "viseme", "value": "u"})) == "events"
    assert feed.timeline.snapshot().starts[-1] == pytest.approx(5.1)


def test_positions_before_any_audio_give_no_timeline() -> None:
    feed = EventFeed()
    feed.feed('{"start": 0, "end": 1, "phoneme": "a"}')
    assert feed.at(0.0) is None
    assert not AudioPositions().ready


def test_live_loudness_is_relative_to_the_loud_level() -> None:
    loud = LiveLoudness(window_s=2.0)
    rng = np.random.default_rng(0)
    speech = rng.standard_normal(16000).astype(np.float32) * 0.3
    loud.note(np.concatenate([speech, np.zeros(8000, np.float32)]))
    assert loud.measure(speech[:640]) == pytest.approx(0.0, abs=1.0)
    assert loud.measure(speech[:640] * 0.1) == pytest.approx(-20.0, abs=1.0)
    assert loud.measure(np.zeros(640, np.float32)) == -60.0
    assert loud.at(np.array([1.0]))[0] == -60.0


# --- no visible jump ----------------------------------------------------------------------


class _ConstantDrive:
    def __init__(self, units: np.ndarray) -> None:
        self.units = units

    def units_at(
        self, mel: object, t: float, times: object = None, lookahead: object = None
    ) -> tuple[np.ndarray, bool]:
        return self.units.copy(), False

    def reset(self) -> None:
        pass


def _constant_model(units: np.ndarray) -> PhoneticModel:
    cfg = PhoneticConfig(loudness=False)
    w = np.zeros((cfg.n_features, len(units)), np.float32)
    w[-1] = units  # the bias row: the same units whatever the events say
    return PhoneticModel(cfg, w, {})


def test_units_fade_to_the_audio_when_events_stop_and_back_when_they_come() -> None:
    audio_units, event_units = np.zeros(9, np.float32), np.linspace(-2, 2, 9).astype(np.float32)
    feed = EventFeed(EventFeedConfig(), _Clock())
    feed.note_audio(0.0, 16000 * 10)
    drive = PhoneticDrive(
        _constant_model(event_units), feed.timeline.snapshot(), _ConstantDrive(audio_units),
        covered_until=-np.inf, fade_frames=4, gaps_fall_back=True, start_on_audio=True,
    )  # fmt: skip
    for k in range(20):  # marks every 100 ms for the first 2 s
        feed.feed(json.dumps({"time": k * 100, "type": "viseme", "value": "a"}))
    out = []
    for i in range(100):  # 25 fps over 4 s; events back from 3.0 s on
        t = i / 25
        if i == 70:
            for k in range(30, 40):
                feed.feed(json.dumps({"time": k * 100, "type": "viseme", "value": "e"}))
        snap = feed.at(t)
        assert snap is not None
        drive.timeline, drive.covered_until = snap, snap.span[1]
        out.append(drive.units_at(None, t)[0])  # type: ignore[arg-type]
    u = np.stack(out)
    step = np.abs(np.diff(u, axis=0)).max(axis=1)
    full = float(np.abs(event_units - audio_units).max())
    assert step.max() <= full / 4 + 1e-5  # never more than one fade step a frame
    np.testing.assert_allclose(u[0], audio_units + (event_units - audio_units) / 4, atol=1e-6)  # fades in
    np.testing.assert_allclose(u[10], event_units, atol=1e-6)
    # marks reach 1.9 + 0.15 s; the window needs future_s: from 1.95 s - 0.1 s the audio takes over
    np.testing.assert_allclose(u[60], audio_units, atol=1e-6)
    np.testing.assert_allclose(u[80], event_units, atol=1e-6)
    fell_back = drive.fallback_frames
    assert 25 <= fell_back <= 40 and drive.frames == 100
    assert feed.counts.late == 0 and N_CLASSES > OPEN


def test_events_socket_flag_takes_loopback_or_a_path() -> None:
    import argparse

    from rtdub.cli.stream import _events_socket
    from rtdub.exceptions import InputError

    assert _events_socket(argparse.Namespace(events_socket="127.0.0.1:7001")) == ("127.0.0.1", 7001)
    assert _events_socket(argparse.Namespace(events_socket="/tmp/ev.sock")) == "/tmp/ev.sock"
    assert _events_socket(argparse.Namespace(events_socket=None)) is None
    for bad in ("10.0.0.1:7001", "example.com:7001", "7001"):
        with pytest.raises(InputError, match="--events-socket"):
            _events_socket(argparse.Namespace(events_socket=bad))
