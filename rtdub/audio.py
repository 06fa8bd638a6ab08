"""Audio features: loudness normalisation and Wav2Lip-convention log-mel spectrograms.

Conventions (docs/design.md §3): 16 kHz mono, pre-emphasis 0.97, STFT n_fft=800, hop=200
(80 mel frames per second), Hann window of 800, 80 mel bins over 55-7600 Hz (Slaney
scale and norm), 20·log10 magnitude minus 20 dB, symmetric scaling to [-4, 4], reflect
padding at the edges of the signal.

Mel frame ``m`` is centred on sample ``m * HOP``. A video frame at time ``t`` seconds
sits at mel index ``t * MEL_FPS``. A window for that frame with lookahead ``L`` seconds
covers the ``n`` mel frames that end at ``(t + L) * MEL_FPS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS = 4.0
MEL_FPS = SAMPLE_RATE / HOP  # 80 mel frames per second
SILENCE_MEL = -MAX_ABS  # the value a fully silent mel bin takes


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_basis(
    sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """Triangular mel filterbank with Slaney area normalisation, shape (n_mels, n_fft//2+1), float64."""
    fft_freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels])
    return weights * enorm[:, None]


_MEL_BASIS = mel_basis().astype(np.float32)
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)  # periodic Hann


def preemphasis(wav: np.ndarray, prev: float = 0.0) -> np.ndarray:
    """y[n] = x[n] - 0.97 x[n-1]; ``prev`` is the sample before ``wav[0]``."""
    wav = np.asarray(wav, dtype=np.float32)
    out = np.empty_like(wav)
    if wav.size:
        out[0] = wav[0] - PREEMPHASIS * prev
        out[1:] = wav[1:] - PREEMPHASIS * wav[:-1]
    return out


def _frames_to_mel(frames: np.ndarray) -> np.ndarray:
    """frames: (T, N_FFT) pre-emphasised samples -> (T, N_MELS) normalised log-mel."""
    spec = np.abs(np.fft.rfft(frames * _WINDOW, n=N_FFT, axis=1)).astype(np.float32)
    mel = spec @ _MEL_BASIS.T
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    scaled = (2 * MAX_ABS) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
    return np.clip(scaled, -MAX_ABS, MAX_ABS).astype(np.float32)


# frames of the STFT computed at once by melspectrogram: its working memory (about 15 kB a
# frame: the framed samples, the float64 spectrum) stays near 15 MB at any length
MEL_BLOCK = 1024


def melspectrogram(wav: np.ndarray, block: int = MEL_BLOCK) -> np.ndarray:
    """Whole-signal log-mel, shape (T, 80) with T = 1 + len(wav) // HOP.

    Computed ``block`` frames at a time: framing the whole signal at once took about 2 kB of
    working memory per sample, 1.2 GB for 10 minutes of audio (the peak of a long dub)."""
    y = preemphasis(np.asarray(wav, dtype=np.float32))
    pad = N_FFT // 2
    if y.size <= pad:
        y = np.pad(y, (0, pad + 1 - y.size))
    y = np.pad(y, (pad, pad), mode="reflect")
    n = 1 + (y.size - N_FFT) // HOP
    out = np.empty((n, N_MELS), np.float32)
    window = np.arange(N_FFT)[None, :]
    for f0 in range(0, n, max(1, block)):
        f1 = min(n, f0 + max(1, block))
        out[f0:f1] = _frames_to_mel(y[window + HOP * np.arange(f0, f1)[:, None]])
    return out


class StreamingMel:
    """Incremental log-mel: feed audio chunks, read mel frames as soon as their window is complete.

    For every frame whose STFT window lies inside the audio pushed so far, the result equals
    :func:`melspectrogram` of the whole signal (the start is reflect-padded the same way).
    Frames older than ``keep_frames`` are dropped (oldest first) to bound memory.
    """

    def __init__(self, keep_frames: int = 8000) -> None:
        self.keep_frames = keep_frames
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)  # pre-emphasised samples not yet fully consumed
        self._buf_start = -(N_FFT // 2)  # absolute sample index (in padded coords) of _buf[0]
        self._prev = 0.0
        self._n_in = 0
        self._mel = np.zeros((0, N_MELS), dtype=np.float32)
        self._mel_start = 0  # absolute index of _mel[0]
        self._started = False

    @property
    def n_frames(self) -> int:
        """Absolute index one past the last complete mel frame."""
        return self._mel_start + len(self._mel)

    @property
    def n_samples(self) -> int:
        return self._n_in

    def push(self, wav: np.ndarray) -> None:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if wav.size == 0:
            return
        y = preemphasis(wav, self._prev)
        self._prev = float(wav[-1])
        self._n_in += wav.size
        if not self._started:
            pending = np.concatenate([self._buf, y])
            if pending.size <= N_FFT // 2:
                self._buf = pending
                return
            pad = pending[1 : N_FFT // 2 + 1][::-1]
            self._buf = np.concatenate([pad, pending])
            self._started = True
        else:
            self._buf = np.concatenate([self._buf, y])
        n = 1 + (self._buf.size - N_FFT) // HOP if self._buf.size >= N_FFT else 0
        if n <= 0:
            return
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
        new = _frames_to_mel(self._buf[idx])
        self._buf = self._buf[n * HOP :]
        self._buf_start += n * HOP
        self._mel = np.concatenate([self._mel, new])
        if len(self._mel) > self.keep_frames:
            drop = len(self._mel) - self.keep_frames
            self._mel = self._mel[drop:]
            self._mel_start += drop

    def finish(self) -> None:
        """The signal has ended: add its last frames, whose windows reach past the end, over
        the end reflected as :func:`melspectrogram` pads it. After this, the frames equal the
        whole signal's (up to float rounding) and no more audio may be pushed."""
        if self._n_in == 0:
            return
        pad = N_FFT // 2
        total = 1 + (max(self._n_in, pad + 1) + 2 * pad - N_FFT) // HOP  # melspectrogram's count
        if not self._started:  # short: the whole signal is in the buffer (pre-emphasised)
            y = self._buf if self._buf.size > pad else np.pad(self._buf, (0, pad + 1 - self._buf.size))
            buf = np.pad(y, (pad, pad), mode="reflect")
            first = 0
        else:
            buf = np.concatenate([self._buf, self._buf[-2 : -pad - 2 : -1]])
            first = self.n_frames
        n = min(total - first, 1 + (buf.size - N_FFT) // HOP if buf.size >= N_FFT else 0)
        if n > 0:
            idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
            self._mel = np.concatenate([self._mel, _frames_to_mel(buf[idx])])
            if len(self._mel) > self.keep_frames:
                drop = len(self._mel) - self.keep_frames
                self._mel = self._mel[drop:]
                self._mel_start += drop
        self._buf = np.zeros(0, dtype=np.float32)
        self._started = True

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Mel frames [start, stop) by absolute index. Missing frames (before the stream, not yet
        computed or already dropped) are filled with silence."""
        out = np.full((stop - start, N_MELS), SILENCE_MEL, dtype=np.float32)
        lo = max(start, self._mel_start)
        hi = min(stop, self.n_frames)
        if hi > lo:
            out[lo - start : hi - start] = self._mel[lo - self._mel_start : hi - self._mel_start]
        return out


def window_bounds(t_sec: float, lookahead_sec: float, n_frames: int) -> tuple[int, int]:
    """Absolute mel indices [start, stop) of the window for a video frame at ``t_sec``."""
    stop = int(round((t_sec + lookahead_sec) * MEL_FPS))
    return stop - n_frames, stop


def mel_window(mel: np.ndarray, t_sec: float, lookahead_sec: float, n_frames: int) -> np.ndarray:
    """Slice a whole-signal mel (T, 80) into the window for a frame; silence outside the signal."""
    start, stop = window_bounds(t_sec, lookahead_sec, n_frames)
    out = np.full((n_frames, N_MELS), SILENCE_MEL, dtype=np.float32)
    lo, hi = max(start, 0), min(stop, len(mel))
    if hi > lo:
        out[lo - start : hi - start] = mel[lo:hi]
    return out


@dataclass
class LoudnessNormalizer:
    """Causal automatic gain control on 20 ms blocks.

    Follows the peak block level of the speech: it jumps up to any louder block and decays
    slowly (``decay_db_per_s``) otherwise, ignoring blocks under an absolute gate so pauses
    and noise do not pull it down. Every block is scaled so that the followed level sits at
    ``target_dbfs``; the gain is clamped, so silence and noise are never blown up past
    ``max_gain_db``. The estimate is relative, so a recording 35 dB quieter comes out at the
    same level. Stateful, so chunked and whole-signal processing agree.
    """

    target_dbfs: float = -12.0
    abs_gate_dbfs: float = -70.0
    decay_db_per_s: float = 2.0
    max_gain_db: float = 45.0
    min_gain_db: float = -20.0
    block: int = 320

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._level_db: float | None = None
        self._gain = 1.0
        self._pending = np.zeros(0, dtype=np.float32)

    def _update(self, block: np.ndarray) -> None:
        power = float(np.mean(block.astype(np.float64) ** 2)) + 1e-12
        db = 10 * math.log10(power)
        if db < self.abs_gate_dbfs:
            return
        if self._level_db is None:
            self._level_db = db
        else:
            decayed = self._level_db - self.decay_db_per_s * self.block / SAMPLE_RATE
            self._level_db = max(db, decayed)
        gain_db = min(self.max_gain_db, max(self.min_gain_db, self.target_dbfs - self._level_db))
        self._gain = 10 ** (gain_db / 20)

    def process(self, wav: np.ndarray) -> np.ndarray:
        """Return the gain-adjusted samples for ``wav`` (same length, float32, clipped to ±1).

        Each block is scaled with the gain learned from the blocks before it, so no sample
        depends on later audio and chunked processing equals whole-signal processing."""
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        data = np.concatenate([self._pending, wav])
        n_blocks = data.size // self.block
        out = np.empty(data.size, dtype=np.float32)
        for i in range(n_blocks):
            blk = data[i * self.block : (i + 1) * self.block]
            out[i * self.block : (i + 1) * self.block] = blk * self._gain
            self._update(blk)
        rest = data[n_blocks * self.block :]
        out[n_blocks * self.block :] = rest * self._gain
        self._pending = rest.copy()
        # the old pending samples were emitted by the previous call already
        return np.clip(out[out.size - wav.size :], -1.0, 1.0)


def normalize_loudness(wav: np.ndarray) -> np.ndarray:
    """Whole-signal convenience wrapper around a fresh :class:`LoudnessNormalizer`."""
    return LoudnessNormalizer().process(wav)


class StaticMel:
    """A whole-signal mel with the same ``frames`` accessor as :class:`StreamingMel`."""

    def __init__(self, mel: np.ndarray) -> None:
        self.mel = np.asarray(mel, np.float32)

    @property
    def n_frames(self) -> int:
        return len(self.mel)

    def frames(self, start: int, stop: int) -> np.ndarray:
        out = np.full((stop - start, N_MELS), SILENCE_MEL, dtype=np.float32)
        lo, hi = max(start, 0), min(stop, len(self.mel))
        if hi > lo:
            out[lo - start : hi - start] = self.mel[lo:hi]
        return out
