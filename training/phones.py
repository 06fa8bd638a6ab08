"""Phone-labelled speech: visual phoneme classes, per-frame phone labels and the shard format.

Two scripts write phone-labelled shards and two read them, so the format lives here rather
than in any one of them: training.tts_data (espeak speech, exact phoneme timings) and
training.asr_phones (real speech, phones recognised by :mod:`training.recogniser`) write
``OUT/*.npz`` with :func:`save_shard`; training.pretrain_a2l and ``train_a2l --kd-tts`` read
them with :func:`load_shards`. training.offset_check maps recognised phones to
:data:`VISEME_CLASSES`.

Shard contents: ``wav`` (int16, 16 kHz), ``phone`` (int16 per mel frame, 80 per second: the
phoneme sounding at the frame centre, as an index into ``symbols``), ``symbols`` (the
shard's phoneme mnemonics, espeak's; index 0 is the pause "_") and ``scenes`` (JSON: how the
shard was made). :func:`viseme_class` maps a mnemonic to a visual class (bilabial closure,
open vowel, rounded, ...) when a shard is read, so classes can change without regenerating.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdub import audio
from rtdub.drive import phones
from rtdub.drive.events import PhoneTimeline, timeline

PAUSE = "_"  # espeak's pause mnemonic: index 0 of every shard's symbols, visual class 0

# --- visual phoneme classes ------------------------------------------------------------------
# one definition, the runtime's (rtdub/drive/phones.py): the phonetic drive reads the same classes
VISEME_CLASSES = phones.VISEME_CLASSES


def viseme_class(symbol: str) -> int:
    """Index into VISEME_CLASSES for an espeak phoneme mnemonic (stress already removed)."""
    return phones.espeak_class(symbol)


@dataclass(frozen=True)
class PhoneSegment:
    """A recognised phone and when it sounds (training.recogniser; read by training.offset_check)."""

    phone: str  # espeak mnemonic; PAUSE for silence and noise
    start: float  # seconds
    end: float


# --- per-frame labels and shards -------------------------------------------------------------


def frame_labels(spans: list[tuple[str, float, float]], n_frames: int, symbols: dict[str, int]) -> np.ndarray:
    """Phoneme index per mel frame (frame m is centred at m / 80 s); 0 ("_") between phonemes."""
    lab = np.zeros(n_frames, np.int16)
    times = np.arange(n_frames) / audio.MEL_FPS
    for sym, a, b in spans:
        k = symbols.setdefault(sym, len(symbols))
        lab[np.searchsorted(times, a) : np.searchsorted(times, b)] = k
    return lab


def save_shard(path: Path, wav: np.ndarray, phone: np.ndarray, symbols: dict[str, int], scenes: str) -> None:
    """A shard (module docstring) written atomically: float ``wav`` at 16 kHz, ``phone`` the
    index per mel frame into ``symbols`` (symbol -> index, as :func:`frame_labels` fills it)."""
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez_compressed(
        tmp,
        wav=(np.clip(wav, -1, 1) * 32767).astype(np.int16),
        phone=np.asarray(phone, np.int16),
        symbols=np.array(sorted(symbols, key=symbols.__getitem__)),
        scenes=np.array(scenes),
    )
    tmp.replace(path)


@dataclass
class TtsShard:
    name: str
    wav: np.ndarray  # float32, 16 kHz
    mel: np.ndarray  # (T, 80), loudness-normalised like the real clips
    phone: np.ndarray  # (T',) int, index into symbols; T' <= T
    symbols: list[str]

    def classes(self) -> np.ndarray:
        table = np.array([viseme_class(s) for s in self.symbols], np.int64)
        return table[self.phone]


def load_shards(path: Path) -> list[TtsShard]:
    out = []
    for p in sorted(Path(path).glob("*.npz")):  # tts_*.npz from training.tts_data, asr_*.npz from training.asr_phones
        if p.name.endswith(".part.npz"):
            continue
        z = np.load(p)
        wav = z["wav"].astype(np.float32) / 32767
        cache = p.with_suffix(".mel.npy")  # the log-mel, computed once per shard
        if cache.exists() and cache.stat().st_mtime >= p.stat().st_mtime:
            mel = np.load(cache)
        else:
            mel = audio.melspectrogram(audio.normalize_loudness(wav))
            tmp = p.with_suffix(".mel.part.npy")
            np.save(tmp, mel)
            tmp.replace(cache)
        out.append(TtsShard(p.stem, wav, mel, z["phone"].astype(np.int64), [str(s) for s in z["symbols"]]))
    if not out:
        raise FileNotFoundError(f"{path}: no TTS shards (run python -m training.tts_data)")
    return out


def asr_timeline(phone: np.ndarray, symbols: list[str], lag: float) -> PhoneTimeline:
    """Runs of the per-10 ms phone labels as events on the picture's clock (minus the lag)."""
    cls = np.array([phones.espeak_class(s) for s in symbols], np.int64)[phone]
    ev: list[tuple[float, float, int]] = []
    start = 0
    for i in range(1, len(cls) + 1):
        if i == len(cls) or cls[i] != cls[start]:
            ev.append((start / 80.0 - lag, i / 80.0 - lag, int(cls[start])))
            start = i
    ev = [(max(a, 0.0), b, c) for a, b, c in ev if b > 0]
    return timeline(ev, "asr")
