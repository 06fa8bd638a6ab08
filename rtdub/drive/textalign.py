"""Text alignment: the phonemes of a known text, timed on dubbed audio spoken by any voice.

The translation pipeline always knows the text of a dub. espeak-ng speaks it (rtdub.tts)
and reports its own phonemes' times; dynamic time warping (DTW) on spectral features aligns
that synthetic reference with the dubbed audio, and every phoneme boundary is carried
through the warping path onto the dubbed audio's clock::

    text, language ─► espeak-ng (at the dub's speaking rate) ─► reference + its phoneme events
                                             │
    dubbed audio (any voice, any rate) ──────┴─► log-mel (rtdub.audio) ─► MFCC c1..c7 + deltas,
                                                 mean and variance normalised over the speech
                                                 frames; energy ─► silence probability
                                             │
                    the reference's frequency scale that fits the voice best (VTLN, 10 fps)
                                             │
                    silence-aware DTW, coarse to fine (bands around the coarser path)
                                             │ warping path
                                             ▼
         espeak's phonemes on the dub's clock ─► PhoneTimeline (source "text") of visual classes

Voices. A voice other than espeak's differs in speaking rate and in vocal tract length. The
reference is spoken again at the dub's rate (from the share of speech frames of each), and
its spectra are warped in frequency by the factor (0.86-1.47, :data:`ALPHAS`) whose coarse
alignment is cheapest: vocal tract length normalisation. Only 7 cepstral coefficients are
kept (the spectral envelope, not a voice's finer detail), and every horizontal or vertical
step pays :data:`STEP_PENALTY`, so the path follows the diagonal unless the spectra say
otherwise.

Silences. Both signals' frames carry a silence probability from their energy (relative to
the speech level of their own utterance). Silence matches silence at no cost and speech
at a fixed mismatch cost, whatever the spectra, so a voice's noise floor does not matter.
A pause the dubbed audio has and the reference lacks is absorbed by horizontal steps (the
reference waits), each costing at most :data:`PAUSE_STEP` on a silent dubbed frame; the
vertical step on a silent reference frame likewise (a reference pause the dub lacks
collapses). After the alignment, a silent stretch of the dub that lasts :data:`PAUSE_MIN_S`
or more longer than the reference frames aligned inside it is a pause in the timeline, not
a stretched phoneme: those frames move to its end (a closure comes right before its
release), the rest is a ``_`` phoneme. Each bilabial stop's start then snaps to the dub's
own release nearby (:data:`SNAP_S`), and rtdub.drive.events.from_speech turns the phonemes
and the dub's audio into the timeline, so the lips close where the dub is quiet before a
stop, exactly as for espeak's own speech.

Trust. The cost of an alignment is its mean spectral distance over the frames where both
signals speak, divided by that of the reference played backwards aligned the same way (the
same sounds in the wrong order): it does not depend on the voice, the loudness or the
language. Measured (benchmarks/textalign.py): the right text 0.22-0.65 when other espeak
voices speak it, 0.83-0.90 for real English voices with a recogniser's (imperfect)
transcript; a wrong text 0.94-1.04 on the real voices, 0.88-1.09 on espeak's (2-3 of 84
below the threshold: the same synthesiser in the same language matches best). Above
:data:`MAX_COST` the text is reported as not matching (``ok`` False, a warning with the
numbers) and the timeline is empty. Otherwise the timeline covers only the
confident spans: where that ratio over the :data:`CONFIDENCE_WINDOW_S` around the frame
stays below :data:`MAX_LOCAL_COST` and the dub's speech there lasts at most
:data:`MAX_STRETCH` times longer or shorter than the reference speech aligned with it (a
phrase the text lacks, or audio beyond the text's end, is not trusted); long pauses are
confident. Outside them no event covers the frame (:meth:`PhoneTimeline.covered` is False)
and the caller drives those frames from the audio alone. Inside them every frame is
covered, pauses by explicit pause events.

Cost: the DTW runs on 80 frames per second in a band around the path found at 20, itself
in a band around the 10 fps path that chose the frequency scale (whose full matrix stays
under :data:`FULL_CELLS` cells, else it is found the same way from coarser levels), so time
and memory grow linearly with the length: a minute of speech aligns in 0.6-1.0 s on one
core of a loaded machine (benchmarks/textalign.py --speed) and takes about 40 MB while it
does.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from .. import audio, tts
from ..exceptions import InputError, RtdubError
from .events import PhoneTimeline, from_speech, timeline
from .phones import PAUSE

logger = logging.getLogger(__name__)

FPS = audio.MEL_FPS  # feature frames per second (80)
N_CEPS = 7  # MFCC c1..c7 (c0, the loudness, is left out)
DELTA_N = 2  # deltas by regression over +-2 frames
REFERENCE_RATE = 160  # espeak words per minute of the first reference
SILENCE_BELOW_DB = 40.0  # a frame this far below the speech level is silent...
SILENCE_ABOVE_FLOOR_DB = 6.0  # ...or within this of the noise floor, whichever is higher
SILENCE_WIDTH_DB = 2.0  # softness of that decision (logistic scale)
MISMATCH_COST = 1.2  # silence against speech (a distance of random speech frames is ~1.4)
PAUSE_STEP = 0.4  # most a horizontal (vertical) step onto a silent dubbed (reference) frame costs
STEP_PENALTY = 0.5  # added to every horizontal and vertical step
POOL = 4  # frames pooled per coarser level
FULL_CELLS = 250_000  # the coarsest level's full cost matrix stays under this
RADIUS = 12  # frames each side of the projected coarse path in the finer level's band
PAUSE_MIN_S = 0.1  # a silent stretch this much longer than its aligned reference is a pause
MAX_COST = 0.91  # above this cost (relative to the reversed reference) the text does not match
MAX_LOCAL_COST = 0.95  # confident where the relative cost over the window stays below this
CONFIDENCE_WINDOW_S = 0.8
CONFIDENT_MIN_S = 0.3  # shorter confident spans are dropped
MAX_STRETCH = 2.0  # nor where the dub's speech lasts this much longer (or shorter) than the aligned reference's
ALPHAS = tuple(1.08**k for k in range(-2, 6))  # frequency scales tried on the reference (0.86-1.47)
VTLN_POOL = POOL * 2  # the scale is chosen at 10 frames per second
SNAP_S = 0.03  # a bilabial stop's start moves to the dub's release within this
QUIET_DB = 20.0  # quiet: this far below the median level of the voiced 10 ms windows
_CHANCE_PAIRS = 4000  # random speech-frame pairs that measure the chance distance


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value
class TextAlignment:
    """The phonemes of a text timed on dubbed audio (:func:`align_text`)."""

    timeline: PhoneTimeline  # source "text"; only the confident spans, empty when not ok
    cost: float  # distance along the path / the reversed reference's (lower is better; inf: no speech)
    confident: np.ndarray  # (K, 2) float64 (start, end) seconds where the alignment is trusted
    ok: bool  # cost <= MAX_COST: the text matches the audio
    phonemes: tuple[tts.Phoneme, ...]  # espeak's, on the dubbed clock (inserted pauses: "_")
    rate: int  # espeak words per minute of the reference that was aligned
    alpha: float  # the reference's frequency scale that fits the dub's voice best (VTLN)
    spans: np.ndarray  # (N, 2) float64 dubbed seconds [start, end) of each reference frame k,
    # which covers reference seconds [(k - 0.5) / FPS, (k + 0.5) / FPS); inserted pauses are gaps

    def to_dub(self, ref_seconds: np.ndarray) -> np.ndarray:
        """Reference (espeak at ``rate``) seconds -> dubbed audio seconds, linear inside a frame."""
        return _to_dub(np.asarray(ref_seconds, np.float64), self.spans)

    @property
    def confident_s(self) -> float:
        """Seconds of dubbed audio inside the confident spans."""
        return float(np.sum(self.confident[:, 1] - self.confident[:, 0])) if len(self.confident) else 0.0


@dataclass(frozen=True, eq=False)
class _Signal:
    """Per-frame features of one signal at FPS."""

    feats: np.ndarray  # (T, 2 * N_CEPS) float64 cepstra and deltas, normalised over the speech frames
    silence: np.ndarray  # (T,) float64 probability that the frame is silent
    duration: float  # seconds

    @property
    def speech_frames(self) -> float:
        return float(np.sum(1.0 - self.silence))


@dataclass(frozen=True, eq=False)
class _Path:
    ref: np.ndarray  # (L,) int64 reference frame of each step, non-decreasing from 0 to N-1
    dub: np.ndarray  # (L,) int64 dubbed frame of each step, non-decreasing from 0 to M-1
    local: np.ndarray  # (L,) float64 spectral distance of each cell
    total: float = 0.0  # the DTW objective: the path's summed step costs


# --- public API ---------------------------------------------------------------------------


def check_language(language: str) -> None:
    """InputError("--language") unless espeak-ng can speak ``language``."""
    if not language or not language.strip():
        raise InputError("--language", "empty; give an espeak-ng language code such as en, es, de, fr")
    try:
        tts.synthesize("", voice=language)  # selects the voice, speaks nothing
    except RtdubError as exc:
        raise InputError(
            "--language", f"espeak-ng cannot speak {language!r} ({exc}); codes: rtdub.tts.available_voices()"
        ) from None


def align_text(
    text: str, language: str, samples: np.ndarray, sample_rate: int, *, match_rate: bool = True
) -> TextAlignment:
    """Time the phonemes of ``text`` (in ``language``, an espeak-ng code) on the dubbed audio
    ``samples`` (mono, any rate, any voice).

    ``match_rate`` speaks the reference a second time at the dub's measured speaking rate
    before the alignment (closer timing, fewer long warps). Audio without speech gives a
    not-ok alignment. InputError for an empty text ("--text"), a language espeak-ng does not
    know ("--language"), or no samples ("--audio")."""
    if not text or not text.strip():
        raise InputError("--text", "empty text; give the words the dubbed audio speaks")
    check_language(language)
    t_start = time.perf_counter()
    x, duration = _mono16k(samples, sample_rate)
    dub = _signal(_melspectrogram(x), x.size, duration=duration)
    speech, ref_mel, n_ref, rate = _reference(text, language, REFERENCE_RATE)
    if dub.speech_frames < 0.1 * FPS:
        logger.warning(
            "no speech in %.2f s of dubbed audio (%.2f s above the silence level); the text's phonemes are not used",
            dub.duration, dub.speech_frames / FPS, extra={"audio_s": dub.duration},
        )  # fmt: skip
        return TextAlignment(timeline([], "text"), math.inf, np.zeros((0, 2)), False, (), rate, 1.0, np.zeros((0, 2)))
    if match_rate:
        ratio = float(np.sum(_silence(ref_mel) < 0.5)) / max(float(np.sum(dub.silence < 0.5)), 1.0)
        wanted = int(round(min(max(REFERENCE_RATE * ratio, tts.RATE_MIN), tts.RATE_MAX)))
        if abs(wanted - REFERENCE_RATE) >= 8:  # 5 %: not worth a second synthesis below that
            speech, ref_mel, n_ref, rate = _reference(text, language, wanted)
    t_synth = time.perf_counter()
    alpha, coarse = _vtln(ref_mel, n_ref, dub)
    ref = _signal(ref_mel, n_ref, alpha)
    path = _align(ref.feats, ref.silence, dub.feats, dub.silence, coarse, VTLN_POOL)
    t_dtw = time.perf_counter()
    distance = _distance_along(path, ref, dub)
    back = _reversed(ref)
    null = _distance_along(_align(back.feats, back.silence, dub.feats, dub.silence), back, dub)
    cost = distance / null if math.isfinite(distance) and math.isfinite(null) and null > 0 else math.inf
    ok = cost <= MAX_COST
    n_dub = len(dub.feats)
    local = _local_cost(path, n_dub, ref, dub) / null
    stretch = _stretch(path, n_dub, ref, dub)
    good = (local <= MAX_LOCAL_COST) & (stretch <= MAX_STRETCH) & (stretch >= 1.0 / MAX_STRETCH)
    confident = _spans(good, n_dub, dub.duration) if ok else np.zeros((0, 2))
    frames = _frame_spans(path, len(ref.feats), n_dub)
    pauses = _inserted_pauses(frames, path, ref, dub)
    spans = np.clip((frames - 0.5) / FPS, 0.0, dub.duration)
    mapped = _snap_stops(_map_phonemes(speech.phonemes, spans, pauses), x, audio.SAMPLE_RATE)
    # the dub's own audio decides where the lips close before a stop, as for espeak's speech
    tl = _fill(from_speech(tts.Speech(x, audio.SAMPLE_RATE, mapped)), dub.duration)
    tl = _clip(tl, confident) if ok else timeline([], "text")
    elapsed = time.perf_counter() - t_start
    if not ok:
        logger.warning(
            "text does not match the dubbed audio: alignment cost %.3f > %.3f (%s, %d chars, %.2f s of audio); "
            "the text's phonemes are not used",
            cost, MAX_COST, language, len(text), dub.duration,
            extra={"cost": cost, "max_cost": MAX_COST, "language": language, "audio_s": dub.duration},
        )  # fmt: skip
    else:
        logger.info(
            "aligned %d chars (%s, reference at %d wpm, %.2f s, frequencies x%.2f) to %.2f s of audio: "
            "cost %.3f, %.2f s confident, %d events; %.3f s (synthesis %.3f, DTW %.3f)",
            len(text), language, rate, ref.duration, alpha, dub.duration, cost,
            float(np.sum(confident[:, 1] - confident[:, 0])) if len(confident) else 0.0, len(tl.starts),
            elapsed, t_synth - t_start, t_dtw - t_synth,
            extra={"cost": cost, "language": language, "audio_s": dub.duration, "align_s": elapsed},
        )  # fmt: skip
    return TextAlignment(tl, cost, confident, ok, mapped, rate, alpha, spans)


# --- features -------------------------------------------------------------------------------


def _mono16k(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Float32 mono samples at 16 kHz and the input's duration in seconds."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[1] <= 8 else x.mean(axis=0)
    if x.ndim != 1 or x.size == 0:
        raise InputError("--audio", f"expected mono samples, got shape {np.shape(samples)}")
    if sample_rate <= 0:
        raise InputError("--audio", f"sample rate must be positive, got {sample_rate}")
    if not np.all(np.isfinite(x)):
        raise InputError("--audio", "samples contain NaN or infinite values")
    if sample_rate != audio.SAMPLE_RATE:
        from scipy.signal import resample_poly  # scipy comes with scikit-image

        g = math.gcd(audio.SAMPLE_RATE, int(sample_rate))
        duration = x.size / sample_rate
        x = resample_poly(x, audio.SAMPLE_RATE // g, int(sample_rate) // g)
        return x.astype(np.float32), duration
    return x.astype(np.float32), x.size / sample_rate


def _melspectrogram(wav: np.ndarray, block: int = 1024) -> np.ndarray:
    """rtdub.audio.melspectrogram, ``block`` frames at a time: the same values (up to float
    rounding) without the whole signal's frames in memory at once (a minute of them takes
    over 100 MB)."""
    y = audio.preemphasis(np.asarray(wav, dtype=np.float32))
    pad = audio.N_FFT // 2
    if y.size <= pad:
        y = np.pad(y, (0, pad + 1 - y.size))
    y = np.pad(y, (pad, pad), mode="reflect")
    n = 1 + (y.size - audio.N_FFT) // audio.HOP
    out = np.empty((n, audio.N_MELS), np.float32)
    window = np.arange(audio.N_FFT)[None, :]
    for f0 in range(0, n, block):
        f1 = min(n, f0 + block)
        out[f0:f1] = audio._frames_to_mel(y[window + audio.HOP * np.arange(f0, f1)[:, None]])
    return out


def _reference(text: str, language: str, rate: int) -> tuple[tts.Speech, np.ndarray, int, int]:
    """espeak's speech of the text, its log-mel at 16 kHz and its length in samples, the rate."""
    speech = tts.synthesize(text, voice=language, rate=rate)
    if not any(p.symbol not in tts.PAUSES for p in speech.phonemes):
        raise InputError("--text", f"espeak-ng ({language}) speaks no phonemes for {text[:60]!r}")
    x = speech.resampled(audio.SAMPLE_RATE).samples
    return speech, _melspectrogram(x), x.size, rate


def _silence(mel: np.ndarray) -> np.ndarray:
    """Probability that each frame is silent, from its energy in the mel band."""
    db = (mel.astype(np.float64) + audio.MAX_ABS) / (2 * audio.MAX_ABS) * -audio.MIN_LEVEL_DB + audio.MIN_LEVEL_DB
    energy = 10.0 * np.log10(np.mean(np.power(10.0, db / 10.0), axis=1))
    level = float(np.percentile(energy, 95))
    floor = float(np.percentile(energy, 2))
    threshold = max(level - SILENCE_BELOW_DB, floor + SILENCE_ABOVE_FLOOR_DB)
    z = np.clip((energy - threshold) / SILENCE_WIDTH_DB, -50.0, 50.0)
    return 1.0 / (1.0 + np.exp(z))


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II rows 1..n_out (c0 left out), shape (n_in, n_out)."""
    k = np.arange(1, n_out + 1)[None, :]
    n = np.arange(n_in)[:, None]
    return np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


_DCT = _dct_matrix(audio.N_MELS, N_CEPS)


def _deltas(x: np.ndarray) -> np.ndarray:
    pad = np.pad(x, ((DELTA_N, DELTA_N), (0, 0)), mode="edge")
    n = len(x)
    num = sum(
        k * (pad[DELTA_N + k : DELTA_N + k + n] - pad[DELTA_N - k : DELTA_N - k + n]) for k in range(1, DELTA_N + 1)
    )
    return np.asarray(num, dtype=np.float64) / (2 * sum(k * k for k in range(1, DELTA_N + 1)))


def _warp_matrix(alpha: float) -> np.ndarray:
    """(N_MELS, N_MELS) linear interpolation that moves the spectrum's features from f to
    alpha * f on the mel bins: vocal tract length normalisation."""
    n = audio.N_MELS
    mels = np.linspace(audio._hz_to_mel(np.array(audio.FMIN)), audio._hz_to_mel(np.array(audio.FMAX)), n + 2)[1:-1]
    source = audio._hz_to_mel(audio._mel_to_hz(mels) / alpha)
    pos = np.clip(np.interp(source, mels, np.arange(n, dtype=np.float64)), 0.0, n - 1.0)
    k = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    frac = pos - k
    out = np.zeros((n, n))
    out[np.arange(n), k] = 1.0 - frac
    out[np.arange(n), k + 1] += frac
    return out


def _signal(
    mel: np.ndarray,
    n_samples: int,
    alpha: float = 1.0,
    silence: np.ndarray | None = None,
    duration: float | None = None,
) -> _Signal:
    """Features of a log-mel spectrogram of ``n_samples`` at 16 kHz whose frequencies are
    first scaled by ``alpha`` (``silence``: the spectrogram's :func:`_silence` when known;
    ``duration``: the signal's when it was resampled)."""
    silence = _silence(mel) if silence is None else silence
    spec = mel.astype(np.float64)
    if alpha != 1.0:
        spec = spec @ _warp_matrix(alpha).T
    ceps = spec @ _DCT
    feats = np.concatenate([ceps, _deltas(ceps)], axis=1)
    w = 1.0 - silence
    if w.sum() < 1.0:  # no speech: plain statistics
        w = np.ones_like(w)
    mean = (w[:, None] * feats).sum(axis=0) / w.sum()
    var = (w[:, None] * (feats - mean) ** 2).sum(axis=0) / w.sum()
    feats = (feats - mean) / np.sqrt(var + 1e-8)
    seconds = n_samples / audio.SAMPLE_RATE if duration is None else duration
    return _Signal(feats / math.sqrt(feats.shape[1]), silence, seconds)


def _pooled(sig: _Signal, f: int) -> _Signal:
    return _Signal(_pool(sig.feats, f), _pool(sig.silence, f), sig.duration)


def _vtln(ref_mel: np.ndarray, n_samples: int, dub: _Signal) -> tuple[float, _Path]:
    """The frequency scale of the reference that aligns best with the dub (by the cost of a
    DTW at 1/VTLN_POOL of the frame rate over the ALPHAS grid, refined by a parabola through
    the best point and its neighbours), and the path at that rate for the best grid point."""
    small = _pooled(dub, VTLN_POOL)
    silence = _silence(ref_mel)
    costs = []
    paths = []
    for alpha in ALPHAS:
        ref = _pooled(_signal(ref_mel, n_samples, alpha, silence), VTLN_POOL)
        paths.append(_align(ref.feats, ref.silence, small.feats, small.silence))
        costs.append(_path_cost(paths[-1], ref, small))
    k = int(np.argmin(costs))
    logs = np.log(ALPHAS)
    best = float(logs[k])
    if 0 < k < len(ALPHAS) - 1:
        c0, c1, c2 = costs[k - 1], costs[k], costs[k + 1]
        curve = c0 - 2 * c1 + c2
        if curve > 1e-9:
            best += 0.5 * (c0 - c2) / curve * float(logs[k + 1] - logs[k])
    return float(math.exp(best)), paths[k]


# --- DTW --------------------------------------------------------------------------------------


def _pool(x: np.ndarray, f: int) -> np.ndarray:
    n = len(x)
    m = -(-n // f)
    pad = np.concatenate([x, np.repeat(x[-1:], m * f - n, axis=0)]) if m * f > n else x
    return pad.reshape(m, f, *x.shape[1:]).mean(axis=1)


@dataclass(frozen=True, eq=False)
class _Band:
    """Cells ``lo[i] <= j < hi[i]`` of each row i, stored flat row after row."""

    lo: np.ndarray  # (N,) int64, non-decreasing, lo[0] == 0
    hi: np.ndarray  # (N,) int64, non-decreasing, hi[-1] == M
    offsets: np.ndarray  # (N + 1,) int64 flat index of each row's first cell

    @classmethod
    def of(cls, lo: np.ndarray, hi: np.ndarray) -> _Band:
        return cls(lo, hi, np.concatenate([[0], np.cumsum(hi - lo)]).astype(np.int64))

    @property
    def cells(self) -> int:
        return int(self.offsets[-1])

    def rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        width = self.hi - self.lo
        rows = np.repeat(np.arange(len(self.lo)), width)
        cols = np.arange(self.cells) - np.repeat(self.offsets[:-1] - self.lo, width)
        return rows, cols


def _band_costs(
    x: np.ndarray, sx: np.ndarray, y: np.ndarray, sy: np.ndarray, band: _Band
) -> tuple[np.ndarray, np.ndarray]:
    """Spectral distance and local cost (silence against silence 0, against speech
    MISMATCH_COST) of the band's cells."""
    n = len(x)
    dist = np.empty(band.cells)
    block = 128
    x2, y2 = (x * x).sum(axis=1), (y * y).sum(axis=1)
    rows, cols = band.rows_cols()
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        c0, c1 = int(band.lo[i0]), int(band.hi[i1 - 1])
        f0, f1 = int(band.offsets[i0]), int(band.offsets[i1])
        dot = x[i0:i1] @ y[c0:c1].T
        dist[f0:f1] = dot[rows[f0:f1] - i0, cols[f0:f1] - c0]
    d2 = x2[rows] + y2[cols] - 2.0 * dist
    np.sqrt(np.maximum(d2, 0.0), out=dist)
    px, py = sx[rows], sy[cols]
    qx, qy = 1.0 - px, 1.0 - py
    cost = qx * qy * dist + (px * qy + qx * py) * MISMATCH_COST
    return dist, cost


def _dtw(x: np.ndarray, sx: np.ndarray, y: np.ndarray, sy: np.ndarray, band: _Band) -> _Path:
    """DTW inside the band, from (0, 0) to (N-1, M-1): the step (1, 1) weighs twice the local
    cost, (1, 0) and (0, 1) once, each at most PAUSE_STEP onto a silent reference (dubbed)
    frame."""
    n, m = len(x), len(y)
    lo, hi, off = band.lo, band.hi, band.offsets
    dist, cost = _band_costs(x, sx, y, sy, band)
    rows, cols = band.rows_cols()
    hcost = np.where(sy[cols] > 0.5, np.minimum(cost, PAUSE_STEP), cost) + STEP_PENALTY
    vcost = np.where(sx[rows] > 0.5, np.minimum(cost, PAUSE_STEP), cost) + STEP_PENALTY
    diag = 2.0 * cost
    first = float(cost[0])
    del cost, rows, cols  # the memory of the band is the DTW's peak
    # horizontal runs inside a row: D(j) = min over k <= j of best(k) + h(k+1) + ... + h(j);
    # with run = the row's running sum of h, D = run + running min of (best - run)
    run = np.cumsum(hcost)
    run -= np.repeat(run[off[:-1]] - hcost[off[:-1]], hi - lo)
    acc = np.empty(band.cells)  # accumulated cost D of every cell
    lo_l, hi_l, off_l = lo.tolist(), hi.tolist(), off.tolist()
    best = np.empty(int((hi - lo).max()))
    for i in range(n):
        a, b, o0, o1 = lo_l[i], hi_l[i], off_l[i], off_l[i + 1]
        row = best[: b - a]
        row.fill(np.inf)
        if i == 0:
            row[0] = first
        else:
            pa, pb, p0 = lo_l[i - 1], hi_l[i - 1], off_l[i - 1]
            s, e = max(a, pa + 1), min(b, pb + 1)  # diagonal from (i-1, j-1)
            if e > s:
                np.add(acc[p0 + s - 1 - pa : p0 + e - 1 - pa], diag[o0 + s - a : o0 + e - a], out=row[s - a : e - a])
            s, e = a, min(b, pb)  # vertical from (i-1, j); lo[i-1] <= lo[i]
            if e > s:
                np.minimum(row[: e - a], acc[p0 + s - pa : p0 + e - pa] + vcost[o0 : o0 + e - a], out=row[: e - a])
        r = run[o0:o1]
        row -= r
        np.minimum.accumulate(row, out=row)
        np.add(row, r, out=acc[o0:o1])
    if not np.isfinite(acc[-1]):
        raise RtdubError("DTW band does not connect the start to the end")  # a bug, not an input
    path = _backtrack(acc, diag, vcost, hcost, dist, band, m)
    return _Path(path.ref, path.dub, path.local, float(acc[-1]))


def _backtrack(
    acc: np.ndarray, diag: np.ndarray, vcost: np.ndarray, hcost: np.ndarray, dist: np.ndarray, band: _Band, m: int
) -> _Path:
    """The path from the accumulated costs: at each cell, the predecessor that gave its value."""
    lo, hi, off = band.lo.tolist(), band.hi.tolist(), band.offsets.tolist()
    acc_l, diag_l, v_l, h_l = acc.item, diag.item, vcost.item, hcost.item  # scalar reads
    inf = math.inf
    i, j = len(lo) - 1, m - 1
    ii, jj = [i], [j]
    while i > 0 or j > 0:
        k = off[i] + j - lo[i]
        up = off[i - 1] + j - lo[i - 1] if i > 0 else -1
        cand_d = acc_l(up - 1) + diag_l(k) if i > 0 and j > 0 and lo[i - 1] <= j - 1 < hi[i - 1] else inf
        cand_v = acc_l(up) + v_l(k) if i > 0 and lo[i - 1] <= j < hi[i - 1] else inf
        cand_h = acc_l(k - 1) + h_l(k) if j > lo[i] else inf
        if cand_d <= cand_v and cand_d <= cand_h:
            i, j = i - 1, j - 1
        elif cand_v <= cand_h:
            i -= 1
        else:
            j -= 1
        ii.append(i)
        jj.append(j)
    ref = np.array(ii[::-1], np.int64)
    dub = np.array(jj[::-1], np.int64)
    return _Path(ref, dub, dist[band.offsets[ref] + dub - band.lo[ref]])


def _band_around(coarse: _Path, factor: int, n: int, m: int, radius: int) -> _Band:
    """The cells within ``radius`` frames of a path found at 1/``factor`` of the frame rate."""
    lo = np.full(n, m, np.int64)
    hi = np.zeros(n, np.int64)
    r0 = coarse.ref * factor
    np.minimum.at(lo, np.minimum(r0, n - 1), coarse.dub * factor)
    np.maximum.at(hi, np.minimum(r0, n - 1), np.minimum(coarse.dub * factor + factor, m))
    for k in range(1, factor):  # the other fine rows of each coarse row
        rk = np.minimum(r0 + k, n - 1)
        np.minimum.at(lo, rk, coarse.dub * factor)
        np.maximum.at(hi, rk, np.minimum(coarse.dub * factor + factor, m))
    lo = np.minimum.accumulate(lo[::-1])[::-1]
    hi = np.maximum.accumulate(hi)
    # radius frames along both axes
    lo = np.clip(np.concatenate([np.full(min(radius, n), lo[0]), lo[: max(n - radius, 0)]])[:n] - radius, 0, m)
    hi = np.clip(np.concatenate([hi[min(radius, n) :], np.full(min(radius, n), hi[-1])])[:n] + radius, 0, m)
    lo[0], hi[-1] = 0, m
    return _Band.of(lo, hi)


def _align(
    x: np.ndarray, sx: np.ndarray, y: np.ndarray, sy: np.ndarray, seed: _Path | None = None, factor: int = POOL
) -> _Path:
    """DTW path of (x, sx) against (y, sy): in the full matrix when it is small, else in a
    band around a coarser path: ``seed`` (a path at 1/``factor`` of the frame rate) refined
    POOL times finer per level, or found here by pooling POOL frames."""
    n, m = len(x), len(y)
    if seed is None:
        if n * m <= FULL_CELLS or min(n, m) < 4 * POOL:
            return _dtw(x, sx, y, sy, _Band.of(np.zeros(n, np.int64), np.full(n, m, np.int64)))
        factor = POOL
        seed = _align(_pool(x, POOL), _pool(sx, POOL), _pool(y, POOL), _pool(sy, POOL))
    elif factor > POOL:  # an intermediate level first
        seed = _align(_pool(x, POOL), _pool(sx, POOL), _pool(y, POOL), _pool(sy, POOL), seed, factor // POOL)
        factor = POOL
    return _dtw(x, sx, y, sy, _band_around(seed, factor, n, m, RADIUS + factor))


# --- results ------------------------------------------------------------------------------------


def _chance(ref: _Signal, dub: _Signal) -> float:
    """Mean distance of random pairs of speech frames (one from each signal)."""
    rng = np.random.default_rng(0)
    a = np.flatnonzero(ref.silence < 0.5)
    b = np.flatnonzero(dub.silence < 0.5)
    if not len(a) or not len(b):
        return 1.0
    i = rng.choice(a, _CHANCE_PAIRS)
    j = rng.choice(b, _CHANCE_PAIRS)
    d = np.sqrt(((ref.feats[i] - dub.feats[j]) ** 2).sum(axis=1))
    return float(max(d.mean(), 1e-6))


def _distance_along(path: _Path, ref: _Signal, dub: _Signal) -> float:
    """Mean spectral distance along the path where both signals speak."""
    w = (1.0 - ref.silence[path.ref]) * (1.0 - dub.silence[path.dub])
    if w.sum() < 1.0:
        return math.inf
    return float((w * path.local).sum() / w.sum())


def _path_cost(path: _Path, ref: _Signal, dub: _Signal) -> float:
    """The distance along the path relative to chance (random speech frames)."""
    return _distance_along(path, ref, dub) / _chance(ref, dub)


def _reversed(sig: _Signal) -> _Signal:
    """The signal played backwards (deltas change sign): the same sounds in the wrong order,
    the null against which an alignment's distance is judged."""
    feats = sig.feats[::-1].copy()
    feats[:, N_CEPS:] *= -1.0
    return _Signal(feats, sig.silence[::-1].copy(), sig.duration)


def _local_cost(path: _Path, n_dub: int, ref: _Signal, dub: _Signal) -> np.ndarray:
    """Per dubbed frame: the spectral distance along the path, averaged over the speech in
    the CONFIDENCE_WINDOW_S around it; 0 in long pauses (silent whatever the text), inf where
    the window holds less than 0.1 s of speech next to speech."""
    w = (1.0 - ref.silence[path.ref]) * (1.0 - dub.silence[path.dub])
    k = max(1, int(round(CONFIDENCE_WINDOW_S * FPS)))
    num = _window_sum(np.bincount(path.dub, w * path.local, n_dub), k)
    den = _window_sum(np.bincount(path.dub, w, n_dub), k)
    out = np.full(n_dub, np.inf)
    seen = den >= 0.1 * FPS  # at least 0.1 s of speech in the window
    out[seen] = num[seen] / den[seen]
    out[~seen & (dub.silence > 0.5)] = 0.0
    return out


def _stretch(path: _Path, n_dub: int, ref: _Signal, dub: _Signal) -> np.ndarray:
    """Per dubbed frame: how much longer the dub's speech in the CONFIDENCE_WINDOW_S around it
    lasts than the reference speech aligned with it, relative to the whole utterance (1: the
    same rate; a text that ends before the audio does leaves its last word stretched far)."""
    k = max(1, int(round(CONFIDENCE_WINDOW_S * FPS)))
    first = np.full(n_dub, len(ref.silence), np.int64)
    last = np.zeros(n_dub, np.int64)
    np.minimum.at(first, path.dub, path.ref)
    np.maximum.at(last, path.dub, path.ref)
    i = np.arange(n_dub)
    lo, hi = np.maximum(0, i - k // 2), np.minimum(n_dub, i + k - k // 2)
    ref_speech = np.concatenate([[0.0], np.cumsum(1.0 - ref.silence)])
    spanned = ref_speech[last[hi - 1] + 1] - ref_speech[first[lo]]
    dub_speech = _window_sum(1.0 - dub.silence, k)
    rate = max(dub.speech_frames, 1.0) / max(ref.speech_frames, 1.0)
    return (dub_speech + 1.0) / (spanned + 1.0) / rate


def _window_sum(v: np.ndarray, k: int) -> np.ndarray:
    """Sum of ``v`` over the ``k`` values centred on each (fewer at the ends), same length."""
    c = np.concatenate([[0.0], np.cumsum(v, dtype=np.float64)])
    i = np.arange(len(v))
    return c[np.minimum(len(v), i + k - k // 2)] - c[np.maximum(0, i - k // 2)]


def _spans(good: np.ndarray, n: int, duration: float) -> np.ndarray:
    """(K, 2) seconds of the runs of ``good`` frames at least CONFIDENT_MIN_S long."""
    d = np.diff(np.concatenate([[0], good.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    spans = [
        (max(0.0, (a - 0.5) / FPS), min(duration, (b - 0.5) / FPS))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    if spans:  # the first and last runs reach the ends of the audio
        if starts[0] == 0:
            spans[0] = (0.0, spans[0][1])
        if ends[-1] == n:
            spans[-1] = (spans[-1][0], duration)
    kept = [(a, b) for a, b in spans if b - a >= CONFIDENT_MIN_S]
    return np.array(kept, np.float64).reshape(-1, 2)


def _frame_spans(path: _Path, n_ref: int, n_dub: int) -> np.ndarray:
    """(n_ref, 2) dubbed frame edges [start, end) of each reference frame (dubbed frame j
    spans [j, j + 1)): a frame ends where the next one starts, halfway between the last
    dubbed frame aligned with it and the first aligned with the next."""
    jmin = np.full(n_ref, n_dub, np.int64)
    jmax = np.zeros(n_ref, np.int64)
    np.minimum.at(jmin, path.ref, path.dub)
    np.maximum.at(jmax, path.ref, path.dub)
    edges = np.empty(n_ref + 1)
    edges[0], edges[-1] = 0.0, float(n_dub)
    edges[1:-1] = (jmax[:-1] + jmin[1:] + 1) / 2.0
    edges = np.maximum.accumulate(edges)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def _to_dub(times: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Reference seconds -> dubbed seconds through the reference frames' spans (seconds)."""
    n_ref = len(spans)
    if not n_ref:
        return np.full(np.shape(times), np.nan)
    e = np.clip(times * FPS + 0.5, 0.0, float(n_ref))
    k = np.minimum(np.floor(e).astype(np.int64), n_ref - 1)
    f = e - k
    return spans[k, 0] * (1.0 - f) + spans[k, 1] * f


def _inserted_pauses(spans: np.ndarray, path: _Path, ref: _Signal, dub: _Signal) -> list[tuple[float, float]]:
    """Find the silent stretches of the dub that last PAUSE_MIN_S or more longer than the
    reference frames aligned inside them would (at the dub's speaking rate); move those
    frames to the end of the stretch (a closure comes right before its release), take the
    rest out of every reference frame's span (in place) and return it, the inserted pauses,
    as (start, end) seconds."""
    silent = dub.silence > 0.5
    slope = max(dub.speech_frames, 1.0) / max(ref.speech_frames, 1.0)
    d = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    n_ref = len(spans)
    jmin = np.full(n_ref, len(silent), np.int64)
    jmax = np.full(n_ref, -1, np.int64)
    np.minimum.at(jmin, path.ref, path.dub)
    np.maximum.at(jmax, path.ref, path.dub)
    out = []
    for a, b in zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True):
        if (b - a) < PAUSE_MIN_S * FPS:
            continue
        inside = np.flatnonzero((jmin >= a) & (jmax < b))  # reference frames aligned only inside
        if len(inside):
            i0, i1 = int(inside[0]), int(inside[-1])
            end = float(spans[i1, 1])
            start = max(float(spans[i0, 0]), end - len(inside) * slope)
            edges = np.linspace(start, end, i1 - i0 + 2)
            spans[i0 : i1 + 1] = np.stack([edges[:-1], edges[1:]], axis=1)
        else:
            start = float(b) - 0.5 * PAUSE_MIN_S * FPS  # one frame holds it: keep a closure's worth
        if start - a < PAUSE_MIN_S * FPS:
            continue
        for i in np.flatnonzero((spans[:, 0] < start) & (spans[:, 1] > a)).tolist():
            beg, end = float(spans[i, 0]), float(spans[i, 1])
            if beg < a and (end <= start or a - beg >= end - start):
                spans[i] = (beg, a)  # speech before the pause
            elif end > start:
                spans[i] = (start, end)  # speech after the pause
            else:
                spans[i] = (a, a) if beg < a else (start, start)
        out.append((max(0.0, (a - 0.5) / FPS), min(dub.duration, (start - 0.5) / FPS)))
    return out


def _map_phonemes(
    phonemes: tuple[tts.Phoneme, ...], spans: np.ndarray, pauses: list[tuple[float, float]]
) -> tuple[tts.Phoneme, ...]:
    """The reference's phonemes on the dubbed clock, the inserted pauses as ``_`` phonemes
    (what overlaps them is cut); phonemes left shorter than 1 ms are dropped."""
    starts = _to_dub(np.array([p.start for p in phonemes]), spans)
    ends = _to_dub(np.array([p.end for p in phonemes]), spans)
    events = [(float(a), float(b), p.symbol, p.stress) for p, a, b in zip(phonemes, starts, ends, strict=True)]
    for a, b in pauses:
        cut: list[tuple[float, float, str, int]] = []
        for s, e, sym, stress in events:
            if e <= a or s >= b:
                cut.append((s, e, sym, stress))
                continue
            if s < a:
                cut.append((s, a, sym, stress))
            if e > b:
                cut.append((b, e, sym, stress))
        cut.append((a, b, "_", 0))
        events = sorted(cut)
    return tuple(tts.Phoneme(sym, s, e, stress) for s, e, sym, stress in events if e - s >= 1e-3)


def _snap_stops(phonemes: tuple[tts.Phoneme, ...], x: np.ndarray, sr: int) -> tuple[tts.Phoneme, ...]:
    """Move the start of each bilabial stop (espeak times it from its release) to the
    dub's nearest release within SNAP_S: a time whose 10 ms before are quiet (QUIET_DB below
    the median level of the voiced 10 ms windows, rtdub.tts.lip_closures' measure) and whose
    10 ms after are not. Stops with no such time nearby keep their aligned start."""
    win = int(0.01 * sr)
    hop = max(1, int(0.0025 * sr))
    if x.size < 4 * win:
        return phonemes
    c = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    t = np.arange(win, x.size - win, hop)  # candidate sample positions
    before = 10 * np.log10((c[t] - c[t - win]) / win + 1e-10)
    after = 10 * np.log10((c[t + win] - c[t]) / win + 1e-10)
    whole = 10 * np.log10((c[win::win] - c[:-win:win]) / win + 1e-10)
    voiced = whole[whole > -60.0]
    if not len(voiced):
        return phonemes
    floor = float(np.median(voiced)) - QUIET_DB
    releases = t[(before < floor) & (after >= floor)] / sr
    if not len(releases):
        return phonemes
    out = list(phonemes)
    for k, p in enumerate(out):
        if p.symbol not in tts.BILABIALS or p.symbol.startswith("m"):
            continue
        near = releases[np.abs(releases - p.start) <= SNAP_S]
        if not len(near):
            continue
        r = float(near[np.argmin(np.abs(near - p.start))])
        lo = out[k - 1].start + 1e-3 if k > 0 else 0.0
        r = min(max(r, lo), p.end - 1e-3)
        if k > 0:
            q = out[k - 1]
            out[k - 1] = tts.Phoneme(q.symbol, q.start, r, q.stress)
        out[k] = tts.Phoneme(p.symbol, r, p.end, p.stress)
    return tuple(out)


def _fill(tl: PhoneTimeline, duration: float) -> PhoneTimeline:
    """Cover [0, duration]: gaps become pause events, neighbouring pauses merge."""
    out: list[tuple[float, float, int]] = []
    pos = 0.0
    for s, e, c in zip(tl.starts.tolist(), tl.ends.tolist(), tl.classes.tolist(), strict=True):
        if s > pos + 1e-9:
            out.append((pos, s, PAUSE))
        s = max(s, pos)
        if e <= s:
            continue
        out.append((s, e, c))
        pos = e
    if duration > pos + 1e-9:
        out.append((pos, duration, PAUSE))
    merged: list[tuple[float, float, int]] = []
    for s, e, c in out:
        if merged and c == PAUSE and merged[-1][2] == PAUSE and s <= merged[-1][1] + 1e-9:
            merged[-1] = (merged[-1][0], e, PAUSE)
        else:
            merged.append((s, e, c))
    return timeline(merged, "text")


def _clip(tl: PhoneTimeline, spans: np.ndarray) -> PhoneTimeline:
    """Only the parts of the events inside the spans."""
    out: list[tuple[float, float, int]] = []
    for a, b in spans.tolist():
        lo = int(np.searchsorted(tl.ends, a, side="right"))
        hi = int(np.searchsorted(tl.starts, b, side="left"))
        for k in range(lo, hi):
            s, e = max(a, float(tl.starts[k])), min(b, float(tl.ends[k]))
            if e > s:
                out.append((s, e, int(tl.classes[k])))
    return timeline(out, "text")
