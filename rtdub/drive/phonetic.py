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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..exceptions import ModelError
from .events import PhoneTimeline
from .phones import N_CLASSES, VISEME_CLASSES

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


def loudness_db(samples: np.ndarray, sample_rate: int, times: np.ndarray) -> np.ndarray:
    """RMS level (dB, full scale 0) of ``samples`` in a window around each time, relative to
    the audio's loud level (its 95th percentile over 10 ms steps), clipped to [-60, 0]."""
    w = max(1, int(LOUDNESS_WINDOW_S * sample_rate))
    x = np.asarray(samples, np.float64)
    c = np.concatenate([[0.0], np.cumsum(x * x)])

    def rms_at(ts: np.ndarray) -> np.ndarray:
        a = np.clip((ts * sample_rate).astype(np.int64) - w // 2, 0, len(x))
        b = np.clip(a + w, 0, len(x))
        e = (c[b] - c[a]) / np.maximum(b - a, 1)
        return 10 * np.log10(np.maximum(e, 1e-12))

    grid = np.arange(0.0, len(x) / sample_rate, 0.01)
    ref = float(np.percentile(rms_at(grid), 95)) if len(grid) else 0.0
    return np.clip(rms_at(np.asarray(times, np.float64)) - ref, LOUDNESS_FLOOR_DB, 0.0)


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

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.weights.shape[0] != self.config.n_features:
            raise ValueError(f"weights must be ({self.config.n_features}, U), got {self.weights.shape}")

    @property
    def n_units(self) -> int:
        return int(self.weights.shape[1])

    def predict(self, feats: np.ndarray) -> np.ndarray:
        return (np.asarray(feats, np.float32) @ self.weights).astype(np.float32)

    def units(self, timeline: PhoneTimeline, times: np.ndarray, loudness: np.ndarray | None = None) -> np.ndarray:
        """(T, U) units for the frames at ``times``."""
        return self.predict(features(timeline, times, self.config, loudness))

    def save(self, path: str | Path) -> None:
        from .. import atomic

        doc = {
            "format": FORMAT,
            "classes": list(VISEME_CLASSES),
            "config": asdict(self.config),
            "units": self.n_units,
            "weights": [[round(float(v), 6) for v in row] for row in self.weights],
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
            model = PhoneticModel(config, weights, dict(doc.get("info", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{p}: malformed phonetic model ({exc!r})") from exc
        if not np.all(np.isfinite(weights)):
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


__all__ = ["PhoneticConfig", "PhoneticModel", "features", "fit_ridge", "frame_times", "loudness_db"]
