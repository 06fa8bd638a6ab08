"""training/offset_check.py: the expert-independent AV offset of a clip, on synthetic signals
with a known lag, with a fake audio-to-lip predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import Clip
from training.offset_check import asr_predictor, check, main
from training.phones import PhoneSegment


def _clip(n: int, fps: float, valid: np.ndarray | None = None) -> Clip:
    return Clip(
        name="synthetic",
        crops=np.zeros((n, 4, 4, 3), np.uint8),
        lips=np.zeros((n, 40, 2), np.float32),
        times=np.arange(n) / fps,
        valid=np.ones(n, bool) if valid is None else valid,
        mel=np.zeros((1, 80), np.float32),
        wav=np.zeros(1, np.float32),
        fps=fps,
    )


def _mouth(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random mouth-opening signal m(t), sampled finely (knots every 80 ms)."""
    rng = np.random.default_rng(seed)
    knots = np.arange(-2.0, 12.0, 0.08)
    return knots, rng.normal(size=len(knots))


@pytest.mark.parametrize(("lag", "fps"), [(0, 25.0), (3, 25.0), (-2, 30.0), (5, 30.0)])
def test_finds_the_lag_of_the_audio(lag: int, fps: float) -> None:
    knots, values = _mouth(lag + 10)
    clip = _clip(200, fps)

    def m(t: np.ndarray) -> np.ndarray:
        return np.interp(t, knots, values)

    gap = m(clip.times)  # what the tracker measured on the video

    # the audio lags the video by `lag` frames: audio at time τ carries the mouth of τ − lag/fps
    def predict(c: Clip, times: np.ndarray) -> np.ndarray:
        return m(times - lag / fps)

    r = check(clip, gap, predict, max_shift=8)
    assert r.shift == lag and r.decided
    assert r.peak == pytest.approx(1.0, abs=1e-9)
    assert r.confidence > 0.3
    assert set(r.curve) == set(range(-8, 9))


def test_flat_or_edge_curves_are_undecided() -> None:
    clip = _clip(200, 25.0)
    rng = np.random.default_rng(1)
    gap = rng.normal(size=200)
    r = check(clip, gap, lambda c, t: np.cos(t * 0.01), max_shift=4)  # unrelated, slow: flat curve
    assert not r.decided
    knots, values = _mouth(2)
    gap = np.interp(clip.times, knots, values)
    far = check(clip, gap, lambda c, t: np.interp(t - 6 / 25, knots, values), max_shift=4)
    assert far.shift == 4 and not far.decided  # the true lag lies beyond the search: peak at the edge


def test_invalid_frames_are_left_out() -> None:
    valid = np.ones(200, bool)
    valid[50:80] = False
    clip = _clip(200, 25.0, valid)
    knots, values = _mouth(3)
    gap = np.interp(clip.times, knots, values)
    gap[~valid] = 1e6  # garbage where the face was not tracked
    r = check(clip, gap, lambda c, t: np.interp(t - 2 / 25, knots, values))
    assert r.shift == 2 and r.peak == pytest.approx(1.0, abs=1e-9)


def test_cli_rejects_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["--a2l", str(missing), "--basis", str(missing), "--data", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def _phones(seed: int, seconds: float) -> list[PhoneSegment]:
    """Random phones of 60-200 ms: /m/, /a/, /s/ and pauses."""
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    while t < seconds:
        d = float(rng.uniform(0.06, 0.2))
        out.append(PhoneSegment(str(rng.choice(["m", "a", "s", "_"])), t, t + d))
        t += d
    return out


OPENING = {"m": 0.0, "a": 1.0, "s": 0.4, "_": 0.2}


def _gap_of(segments: list[PhoneSegment], times: np.ndarray) -> np.ndarray:
    out = np.full(len(times), OPENING["_"])
    for s in segments:
        out[(times >= s.start) & (times < s.end)] = OPENING[s.phone]
    return out


@pytest.mark.parametrize("lag", [0, 2, -3])
def test_recognised_phones_find_the_lag(lag: int) -> None:
    """The ASR predictor learns each visual class's mean opening on an in-sync clip, then
    finds a clip's lag from its phones alone (a fake recogniser: the phones are known)."""
    fps = 25.0
    phones = {"fit": _phones(1, 9.0), "test": _phones(2, 9.0)}
    fit, test = _clip(200, fps), _clip(200, fps)
    fit.name, test.name = "fit", "test"
    rng = np.random.default_rng(lag + 5)
    fit_gap = _gap_of(phones["fit"], fit.times) + rng.normal(0, 0.1, 200)
    # the audio lags the video by `lag` frames: the mouth at t is the phone heard at t + lag/fps
    test_gap = _gap_of(phones["test"], test.times + lag / fps) + rng.normal(0, 0.1, 200)
    predict = asr_predictor([fit], [fit_gap], lambda c: phones[c.name])
    r = check(test, test_gap, predict, max_shift=6)
    assert r.shift == lag and r.decided, r
    assert r.peak > 0.8
