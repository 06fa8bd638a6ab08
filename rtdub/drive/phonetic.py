"""The phonetic drive: lip-motion units per video frame from timed visual phoneme classes,
with coarticulation, and optionally the loudness of the dubbed audio.

    PhoneTimeline ─► class occupancy in bins over [t - past, t + future] ─┐
    dubbed audio  ─► loudness around t (dB under the audio's loud level) ─┼─► linear map ─► units(t)
                                                                          ┘   (PhoneticModel)

A window of classes around the frame, not the class at the frame, is what carries
coarticulation: the lips close before a /p/ is heard and round before an /u/. The map is
learned (training/train_phonetic.py) from real talking-head clips whose phones were recognised
from their audio, predicting the speaker-normalised units the generator takes (the bundle's lip
basis, rtdub/face/lipunits.py); the model is a small JSON file in the bundle (read as data,
nothing executed).

Speaker-independent by construction: it never hears the voice, only the classes (and how loud).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..exceptions import ModelError
from ..model import ModelBundle
from .audio import MelSource
from .base import Drive
from .events import PhoneTimeline
from .phones import BILABIAL, N_CLASSES, PAUSE, VISEME_CLASSES

FORMAT = "rtdub-phonetic/1"
LOUDNESS_WINDOW_S = 0.04  # RMS window around the frame
LOUDNESS_FLOOR_DB = -60.0  # quieter reads as this


@dataclass(frozen=True)
class PhoneticConfig:
    bin_s: float = 0.02  # occupancy bin width
    past_s: float = 0.2  # classes this far before the frame
    future_s: float = 0.1  # and this far after it (coarticulation needs some future)
    loudness: bool = True  # loudness features (level, and level x each class at the frame)

    def __post_init__(self) -> None:
        if not (self.bin_s > 0 and self.past_s >= 0 and self.future_s >= 0):
            raise ValueError("bin_s must be > 0, past_s and future_s >= 0")

    @property
    def bins(self) -> int:
        return int(round((self.past_s + self.future_s) / self.bin_s)) + 1

    @property
    def n_features(self) -> int:
        return self.bins * N_CLASSES + (1 + N_CLASSES if self.loudness else 0) + 1  # + bias


class Loudness:
    """RMS level (dB) of an audio track in a window around given times, relative to the
    track's loud level (its 95th percentile over 10 ms steps), clipped to [-60, 0]."""

    def __init__(self, samples: np.ndarray, sample_rate: int, start: float = 0.0) -> None:
        self.start = start  # the clock time of the first sample (a stream's clip starts later)
        x = np.asarray(samples, np.float64)
        self.n = len(x)
        self.rate = sample_rate
        self.w = max(1, int(LOUDNESS_WINDOW_S * sample_rate))
        self._c = np.concatenate([[0.0], np.cumsum(x * x)])
        grid = np.arange(0.0, self.n / sample_rate, 0.01)
        self.ref = float(np.percentile(self._rms(grid), 95)) if len(grid) else 0.0

    def _rms(self, ts: np.ndarray) -> np.ndarray:
        a = np.clip((np.asarray(ts, np.float64) * self.rate).astype(np.int64) - self.w // 2, 0, self.n)
        b = np.clip(a + self.w, 0, self.n)
        e = (self._c[b] - self._c[a]) / np.maximum(b - a, 1)
        return 10 * np.log10(np.maximum(e, 1e-12))

    def at(self, times: np.ndarray) -> np.ndarray:
        return np.clip(self._rms(np.asarray(times, np.float64) - self.start) - self.ref, LOUDNESS_FLOOR_DB, 0.0)


class LoudnessAt(Protocol):
    """What the drive reads the level from: :class:`Loudness` over a whole track, or a stream's
    (rtdub.stream.liveloudness.LiveLoudness)."""

    def at(self, times: np.ndarray) -> np.ndarray: ...


def loudness_db(samples: np.ndarray, sample_rate: int, times: np.ndarray) -> np.ndarray:
    """:class:`Loudness` of ``samples`` at ``times``."""
    return Loudness(samples, sample_rate).at(times)


def features(
    timeline: PhoneTimeline, times: np.ndarray, config: PhoneticConfig, loudness: np.ndarray | None = None
) -> np.ndarray:
    """(T, n_features) float32 for the frames at ``times`` (s): class occupancy in the window,
    then (with ``config.loudness``) the level in [-1, 0] and the level times the occupancy of
    the frame's own bin, then a constant 1."""
    times = np.asarray(times, np.float64)
    nb, step = config.bins, config.bin_s
    out = np.zeros((len(times), config.n_features), np.float32)
    centre = int(round(config.past_s / step))
    for i, t in enumerate(times):
        occ = timeline.occupancy(t - config.past_s - step / 2, step, nb)
        out[i, : nb * N_CLASSES] = occ.ravel()
        if config.loudness:
            lv = 0.0 if loudness is None else float(loudness[i]) / -LOUDNESS_FLOOR_DB
            out[i, nb * N_CLASSES] = lv
            out[i, nb * N_CLASSES + 1 : nb * N_CLASSES + 1 + N_CLASSES] = lv * occ[centre]
    out[:, -1] = 1.0
    return out


@dataclass(frozen=True)
class PhoneticModel:
    """The learned map from :func:`features` to the bundle's z-scored units."""

    config: PhoneticConfig
    weights: np.ndarray  # (n_features, U) float32
    info: dict[str, object]  # how it was trained (for the manifest and the model card)
    # articulation: units = centre + gain * (linear map - centre). A least-squares map from
    # noisy labels under-articulates (its output varies far less than real lips); the gain
    # gives each unit the spread real speech has (training/train_phonetic.py measures it)
    gain: np.ndarray | None = None  # (U,)
    centre: np.ndarray | None = None  # (U,)
    # bilabial closure: the lips are shut while a /p b m/ closes them, whatever the map says.
    # Units move to ``closed`` (the bundle's closed-mouth units) by ``closure`` times the
    # share of the frame's bin the bilabial covers (0 = the learned map alone)
    closure: float = 0.0
    closed: np.ndarray | None = None  # (U,)

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.weights.shape[0] != self.config.n_features:
            raise ValueError(f"weights must be ({self.config.n_features}, U), got {self.weights.shape}")
        if not 0.0 <= self.closure <= 1.0 or (self.closure > 0 and self.closed is None):
            raise ValueError("closure must be in [0, 1], with the closed-mouth units when > 0")
        for name in ("gain", "centre", "closed"):
            v = getattr(self, name)
            if v is not None and np.shape(v) != (self.weights.shape[1],):
                raise ValueError(f"{name} must have one value per unit ({self.weights.shape[1]})")

    @property
    def n_units(self) -> int:
        return int(self.weights.shape[1])

    def predict(self, feats: np.ndarray) -> np.ndarray:
        out = np.asarray(feats, np.float32) @ self.weights
        if self.gain is not None:
            c = np.zeros_like(self.gain) if self.centre is None else self.centre
            out = c + self.gain * (out - c)
        return out.astype(np.float32)

    def units(self, timeline: PhoneTimeline, times: np.ndarray, loudness: np.ndarray | None = None) -> np.ndarray:
        """(T, U) units for the frames at ``times``."""
        feats = features(timeline, times, self.config, loudness)
        return self.close_lips(self.predict(feats), feats)

    def close_lips(self, units: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """``units`` with the bilabial closure applied (see ``closure``)."""
        if self.closure <= 0 or self.closed is None:
            return units
        centre = int(round(self.config.past_s / self.config.bin_s))
        share = feats[:, centre * N_CLASSES + BILABIAL : centre * N_CLASSES + BILABIAL + 1]
        w = np.clip(self.closure * share, 0.0, 1.0)
        return ((1.0 - w) * units + w * self.closed).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from .. import atomic

        doc = {
            "format": FORMAT,
            "classes": list(VISEME_CLASSES),
            "config": asdict(self.config),
            "units": self.n_units,
            "weights": [[round(float(v), 6) for v in row] for row in self.weights],
            "gain": None if self.gain is None else [round(float(v), 6) for v in self.gain],
            "centre": None if self.centre is None else [round(float(v), 6) for v in self.centre],
            "closure": self.closure,
            "closed": None if self.closed is None else [round(float(v), 6) for v in self.closed],
            "info": self.info,
        }
        atomic.write_text(Path(path), json.dumps(doc, indent=1) + "\n")

    @staticmethod
    def load(path: str | Path) -> PhoneticModel:
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{p}: unreadable phonetic model ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ModelError(f"{p}: not a phonetic model ({FORMAT})")
        if doc.get("classes") != list(VISEME_CLASSES):
            raise ModelError(f"{p}: trained on other visual classes than this runtime's")
        try:
            config = PhoneticConfig(**doc["config"])
            weights = np.asarray(doc["weights"], np.float32)
            gain = None if doc.get("gain") is None else np.asarray(doc["gain"], np.float32)
            centre = None if doc.get("centre") is None else np.asarray(doc["centre"], np.float32)
            closed = None if doc.get("closed") is None else np.asarray(doc["closed"], np.float32)
            model = PhoneticModel(
                config, weights, dict(doc.get("info", {})), gain, centre, float(doc.get("closure", 0.0)), closed
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{p}: malformed phonetic model ({exc!r})") from exc
        if not all(np.all(np.isfinite(v)) for v in (weights, gain, centre, closed) if v is not None):
            raise ModelError(f"{p}: non-finite weights")
        return model


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Least squares with an L2 penalty ``alpha`` on every weight but the last (the bias)."""
    x = np.asarray(x, np.float64)
    reg = alpha * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(x.T @ x + reg, x.T @ np.asarray(y, np.float64)).astype(np.float32)


def frame_times(n: int, fps: float) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / fps


class PhoneticDrive:
    """The units of a :class:`PhoneticModel` over a timeline, with the audio drive wherever the
    events do not reach: a frame whose window ``[t - past, t + future]`` lies beyond
    ``covered_until`` (a file's last event; a stream's newest event) takes the audio drive's
    units. The change between the two is faded over ``fade_frames`` frames, so a late or missing
    event makes no visible jump. ``fallback_frames`` counts the frames that used the audio.
    ``start_on_audio``: begin (and restart, on reset) on the audio drive, fading in once events
    cover a frame (a stream whose events have not come yet)."""

    def __init__(
        self,
        model: PhoneticModel,
        timeline: PhoneTimeline,
        fallback: Drive,
        loudness: LoudnessAt | None = None,
        covered_until: float | None = None,
        fade_frames: int = 3,
        gaps_fall_back: bool = False,
        start_on_audio: bool = False,
    ) -> None:
        self.model = model
        self.timeline = timeline
        self.fallback = fallback
        self.loudness = loudness
        self.covered_until = timeline.span[1] if covered_until is None else covered_until
        self.fade = 1.0 / max(1, fade_frames)
        # a gap between events: a pause (a phoneme file's silence) or, with this, no evidence
        # (an aligned text's spans that could not be trusted): the audio drive there
        self.gaps_fall_back = gaps_fall_back
        self.start_on_audio = start_on_audio
        self._weight = 0.0 if start_on_audio else 1.0  # of the events, against the audio drive
        self.frames = 0
        self.fallback_frames = 0

    def reset(self) -> None:
        self._weight = 0.0 if self.start_on_audio else 1.0
        self.fallback.reset()

    def units_at(
        self,
        mel: MelSource,
        t: float,
        times: dict[str, float] | None = None,
        lookahead: float | None = None,
    ) -> tuple[np.ndarray, bool]:
        t0 = time.perf_counter()
        cfg = self.model.config
        ok = t + cfg.future_s <= self.covered_until + 1e-9 and t >= self.timeline.span[0] - cfg.past_s
        if ok and self.gaps_fall_back:
            ok = self.timeline.covered(max(t - cfg.past_s, self.timeline.span[0]), t + cfg.future_s)
        target = 1.0 if ok else 0.0
        self._weight += float(np.clip(target - self._weight, -self.fade, self.fade))
        self.frames += 1
        audio_units, silent = self.fallback.units_at(mel, t, times, lookahead)  # keeps its smoothing state
        if self._weight <= 0.0:
            self.fallback_frames += 1
            return audio_units, silent
        ts = np.array([t])
        loud = None if self.loudness is None else self.loudness.at(ts)
        feats = features(self.timeline, ts, cfg, loud)
        units = self.model.close_lips(self.model.predict(feats), feats)[0]
        centre = self.timeline.occupancy(t - cfg.bin_s / 2, cfg.bin_s, 1)[0]
        silent = bool(centre[PAUSE] > 0.99)
        if self._weight < 1.0:
            self.fallback_frames += 1
            units = self._weight * units + (1.0 - self._weight) * audio_units
        if times is not None:  # the lip stage's time ("a2l"), the audio drive's included
            times["a2l"] = (time.perf_counter() - t0) * 1000 - times.get("mel", 0.0)
        return units.astype(np.float32), silent


def bundle_drive(
    bundle: ModelBundle,
    timeline: PhoneTimeline,
    fallback: Drive,
    samples: np.ndarray,
    sample_rate: int,
    start: float = 0.0,
    gaps_fall_back: bool = False,
) -> PhoneticDrive:
    """The bundle's phonetic drive over ``timeline``, with the loudness of the dubbed audio
    (``samples`` at ``sample_rate``, its first sample at clock time ``start``); ModelError when
    the bundle has no phonetic model."""
    model = bundle_model(bundle)
    loud = Loudness(samples, sample_rate, start)
    return PhoneticDrive(model, timeline, fallback, loud, gaps_fall_back=gaps_fall_back)


def bundle_model(bundle: ModelBundle) -> PhoneticModel:
    """The bundle's phonetic model; ModelError when it has none or it does not fit."""
    if bundle.phonetic_path is None:
        raise ModelError(f"{bundle.root}: this model bundle has no phonetic drive (manifest entry 'phonetic')")
    model = PhoneticModel.load(bundle.phonetic_path)
    if model.n_units != bundle.n_units:
        raise ModelError(f"{bundle.phonetic_path}: {model.n_units} units, the bundle has {bundle.n_units}")
    return model


__all__ = [
    "bundle_drive",
    "bundle_model",
    "Loudness",
    "LoudnessAt",
    "PhoneticConfig",
    "PhoneticDrive",
    "PhoneticModel",
    "features",
    "fit_ridge",
    "frame_times",
    "loudness_db",
]
