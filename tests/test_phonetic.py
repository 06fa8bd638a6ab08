"""The phonetic drive: its model file (round trip, refusal of a broken one), the features it
reads, the ridge fit, the audio fallback beyond the events (faded, counted) and the bilabial
closure rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtdub.drive.events import timeline
from rtdub.drive.phones import BILABIAL, N_CLASSES, OPEN, PAUSE
from rtdub.drive.phonetic import Loudness, PhoneticConfig, PhoneticDrive, PhoneticModel, features, fit_ridge
from rtdub.exceptions import ModelError

U = 9


def model(closure: float = 0.0, seed: int = 0) -> PhoneticModel:
    cfg = PhoneticConfig(bin_s=0.04, past_s=0.08, future_s=0.04, loudness=True)
    w = np.random.default_rng(seed).normal(size=(cfg.n_features, U)).astype(np.float32)
    closed = np.full(U, -1.5, np.float32)
    return PhoneticModel(cfg, w, {"test": True}, np.full(U, 2.0, np.float32), np.zeros(U, np.float32), closure, closed)


def test_model_round_trip_and_refusals(tmp_path: Path) -> None:
    m = model(closure=0.5)
    m.save(tmp_path / "p.json")
    back = PhoneticModel.load(tmp_path / "p.json")
    assert back.config == m.config and back.closure == 0.5
    np.testing.assert_allclose(back.weights, m.weights, atol=1e-5)
    np.testing.assert_allclose(back.gain, m.gain)  # type: ignore[arg-type]
    doc = json.loads((tmp_path / "p.json").read_text())
    changes: list[tuple[dict[str, object], str]] = [
        ({"format": "other"}, "not a phonetic model"),
        ({"classes": ["a", "b"]}, "other visual classes"),
        ({"weights": [[1.0, 2.0]]}, "malformed"),
        ({"gain": [float("nan")] * U}, "non-finite"),
    ]
    for change, match in changes:
        (tmp_path / "bad.json").write_text(json.dumps({**doc, **change}))
        with pytest.raises(ModelError, match=match):
            PhoneticModel.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ModelError, match="unreadable"):
        PhoneticModel.load(tmp_path / "junk.json")


def test_features_window_and_loudness() -> None:
    cfg = PhoneticConfig(bin_s=0.04, past_s=0.08, future_s=0.04, loudness=True)
    tl = timeline([(0.0, 0.1, BILABIAL), (0.1, 0.3, OPEN)])
    x = features(tl, np.array([0.1, 0.2]), cfg, np.array([-30.0, 0.0]))
    assert x.shape == (2, cfg.n_features) and cfg.bins == 4
    occ = x[:, : cfg.bins * N_CLASSES].reshape(2, cfg.bins, N_CLASSES)
    np.testing.assert_allclose(occ.sum(-1), 1.0, atol=1e-6)
    assert occ[1, 2, OPEN] == pytest.approx(1.0)  # the frame's own bin at 0.2 s
    assert occ[0, 0, BILABIAL] == pytest.approx(1.0)  # 80 ms before 0.1 s
    assert x[0, cfg.bins * N_CLASSES] == pytest.approx(-0.5) and x[1, cfg.bins * N_CLASSES] == 0.0
    assert (x[:, -1] == 1).all()


def test_fit_ridge_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(500, 6)), np.ones((500, 1))], axis=1)
    w = rng.normal(size=(7, 3))
    got = fit_ridge(x, x @ w, alpha=1e-6)
    np.testing.assert_allclose(got, w, atol=1e-3)


class ConstantDrive:
    """The audio drive's stand-in: always the same units."""

    def __init__(self) -> None:
        self.calls = 0

    def units_at(
        self, mel: object, t: float, times: dict[str, float] | None = None, lookahead: float | None = None
    ) -> tuple[np.ndarray, bool]:
        self.calls += 1
        return np.full(U, 7.0, np.float32), False

    def reset(self) -> None:
        pass


def test_drive_falls_back_beyond_the_events_without_a_jump() -> None:
    m = model()
    tl = timeline([(0.0, 0.5, OPEN), (0.5, 1.0, PAUSE)])
    fallback = ConstantDrive()
    drive = PhoneticDrive(m, tl, fallback, fade_frames=3)
    out = [drive.units_at(None, i / 25)[0] for i in range(40)]  # type: ignore[arg-type]
    assert fallback.calls == 40  # the audio drive keeps its state on every frame
    from_events = [np.allclose(u, 7.0) for u in out]
    assert not any(from_events[:20]) and all(from_events[28:])
    # the change to the audio drive is spread over the fade: never more than a third per frame
    w = [float(np.mean((u - m.units(tl, np.array([i / 25]))[0]) / (7.0 - m.units(tl, np.array([i / 25]))[0])))
         for i, u in enumerate(out)]  # fmt: skip
    assert max(np.diff(w)) <= 1 / 3 + 1e-3
    assert drive.fallback_frames >= 12


def test_bilabial_closure_rule() -> None:
    tl = timeline([(0.0, 0.2, BILABIAL), (0.2, 0.4, OPEN)])
    t = np.array([0.1, 0.3])
    closed = model(closure=1.0).units(tl, t)
    free = model(closure=0.0).units(tl, t)
    np.testing.assert_allclose(closed[0], -1.5, atol=1e-5)  # the closed-mouth units
    np.testing.assert_allclose(closed[1], free[1])  # an open vowel is the map's


def test_loudness_is_relative_to_the_loud_level() -> None:
    sr = 16000
    x = np.concatenate([np.zeros(sr), 0.5 * np.sin(np.arange(sr) * 0.3)]).astype(np.float32)
    lv = Loudness(x, sr).at(np.array([0.5, 1.5]))
    assert lv[0] == -60.0 and lv[1] == pytest.approx(0.0, abs=1.0)


def test_gaps_fall_back_when_asked() -> None:
    """An aligned text's timeline has holes where the alignment is not trusted: with
    gaps_fall_back those frames take the audio drive; a phoneme file's gap is a pause."""
    m = model()
    tl = timeline([(0.0, 0.4, OPEN), (1.0, 1.6, OPEN)])
    strict = PhoneticDrive(m, tl, ConstantDrive(), fade_frames=1, gaps_fall_back=True)
    lenient = PhoneticDrive(m, tl, ConstantDrive(), fade_frames=1)
    t = 0.7  # inside the hole
    assert np.allclose(strict.units_at(None, t)[0], 7.0)  # type: ignore[arg-type]
    assert not np.allclose(lenient.units_at(None, t)[0], 7.0)  # type: ignore[arg-type]
    assert not np.allclose(strict.units_at(None, 1.3)[0], 7.0)  # type: ignore[arg-type]
