"""A second opinion on the AV offset: the mouth opening heard in the audio against the one
seen on the face, combined with the lip-sync expert's distances (issue 18, item 4).

The lip-sync expert (rtdub/measure/avsync.py) compares pixels with mel windows; on a face it
never saw it can lean a few frames either way. This evidence compares one number per frame
instead, so no identity's pixels are involved:

    audio ─► log-mel ─► the bundle's audio-to-lip model ─► predicted inner-lip gap per frame ─┐
    video ─► tracker ─► inner-lip gap per frame (the gap unit, up to scale) ──────────────────┴─► Pearson
                                                                                  per shift k

For each shift k in −15…+15 frames the tracked gap of video frame i is paired with the
predicted gap of audio frame i + k (only frames where both exist), as the expert's
:func:`~rtdub.measure.avsync.offset_distances` pairs them; the offset is −argmax k, on
syncnet_python's sign (positive: the audio leads). The audio-to-lip model is speaker-
normalised (z-scored units); a correlation ignores scale and level, so neither the voice's
loudness nor the face's size matter.

:func:`combine` standardises each curve over the shifts (mean 0, deviation 1; the expert's
distances negated so that higher is better) and adds them, the evidence with
:attr:`CombineRule.weight`. The weights were chosen on the expert's and the audio-to-lip
model's own training identities, one identity left out at a time
(benchmarks/av_offset.py, benchmarks/results/av_offset.md); nothing here saw the identities
it is scored on. onnxruntime only. On identities left out, the audio-to-lip gap alone finds
the offset within ±1 frame on only 40 % of shifted-audio trials: it did not earn a vote
(:data:`DEFAULT_RULE`), and is reported for information.

A third curve comes from recognised phones when pocketsphinx is installed (it is in the
``train`` extra, not a runtime dependency): :class:`PhoneRecogniser` times the phones of the
audio with pocketsphinx's en-us model (trained on other speech than anything here), each
phone's visual class predicts the mean inner-lip gap that class has on the real training
identities (:data:`CLASS_GAP`), and that track is correlated with the tracked gap as above.
It has no learned lag of its own: its timing is acoustic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import audio
from ..exceptions import ModelError
from .avsync import VSHIFT

logger = logging.getLogger(__name__)

MIN_OVERLAP = 12  # frames both tracks must share at a shift for its correlation to count
SILENCE_LEVEL = -3.0  # mean log-mel (scale [-4, 4]) of the 50 ms around a frame below this: silent


@dataclass(frozen=True)
class CombineRule:
    """How the expert's distances and the evidence's correlations are combined."""

    weight: float = 1.0  # the evidence's standardised curve, against the expert's (weight 1)
    # evidence curves flatter than this (peak minus median correlation) are left out
    min_confidence: float = 0.0
    # frames the audio-to-lip model's opening reads late: it learned the lag of its training
    # clips, so on an in-sync clip its curve peaks at offset +bias; the evidence is read bias
    # frames earlier
    bias: int = 0
    phone_weight: float = 0.0  # the recognised phones' curve (when there is one)
    phone_bias: int = 0  # and its lag, as ``bias``
    # False: every curve standardised over the shifts (each counts the same however flat it
    # is); True: only centred, so a flat curve (an unsure expert, a weak correlation) counts
    # for little and the weights are in distance units per unit of correlation
    absolute: bool = False


# Chosen on the training identities only (benchmarks/results/av_offset.md): of the evidence sets,
# the recognised phones alone beat the expert alone when one identity is left out at a time
# (92.2 % against 87.5 %), the audio-to-lip gap did not (84.6 %; with the phones 88.3 %), so
# its weight is 0: it is reported, read 3 frames earlier (the lag it learned from its training
# clips), but does not vote. Without pocketsphinx the offset is the expert's.
DEFAULT_RULE = CombineRule(weight=0.0, min_confidence=0.0, bias=3, phone_weight=0.2, phone_bias=0, absolute=True)


@dataclass(frozen=True)
class OffsetChoice:
    """The expert's offset, the evidence's and the combined one (syncnet_python's sign)."""

    expert: int
    evidence: int | None  # None: no usable evidence (no face gap, too few frames)
    combined: int
    used: str  # "combined" or "expert" (the evidence was missing or too flat)
    evidence_confidence: float  # peak − median of the correlation curve (nan: none)
    evidence_curve: np.ndarray  # (2·vshift+1,) correlation per shift k = −vshift…+vshift, bias removed
    phones: int | None = None  # the recognised phones' offset (None: no phone curve)
    phone_confidence: float = float("nan")


class GapPredictor:
    """The inner-lip gap that a bundle's audio-to-lip model hears at given times."""

    def __init__(self, model: str | Path | None = None, threads: int = 2, lookahead: float | None = None) -> None:
        from ..backends.onnx import make_session
        from ..model import load_bundle

        # the audio-to-lip model alone (benchmarked here), not a bundle's fused audio drive: the
        # fused drive's recogniser map was fitted on identities this evidence is scored on
        bundle = load_bundle(model).audio_model("base")
        path = bundle.a2l_path
        if not path.is_file():
            raise ModelError(f"{bundle.root}: no audio-to-lip model ({path.name})")
        self.window = bundle.mel_window
        # the most future audio the model was trained with: the prediction closest to centred
        self.lookahead = bundle.max_lookahead if lookahead is None else float(lookahead)
        self._session = make_session(str(path), threads)

    def predict(self, mel: np.ndarray, times: np.ndarray, batch: int = 256) -> np.ndarray:
        """(N,) predicted gap unit (z-score) at ``times`` (s) of ``mel`` (rtdub.audio scale);
        silent frames read as nan (no evidence either way)."""
        times = np.asarray(times, np.float64)
        if len(times) == 0:
            return np.zeros(0, np.float32)
        wins = np.stack([audio.mel_window(mel, float(t), self.lookahead, self.window) for t in times])
        wins = wins.astype(np.float32)
        out = []
        for s in range(0, len(wins), batch):
            b = wins[s : s + batch]
            la = np.full((len(b), 1), self.lookahead, np.float32)
            res = self._session.run(["units"], {"mel": b, "lookahead": la})  # type: ignore[attr-defined]
            out.append(np.asarray(res[0], np.float32)[:, -1])
        gap = np.concatenate(out)
        gap[silent_frames(mel, times)] = np.nan
        return gap


def silent_frames(mel: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Frames whose 50 ms of audio around them are silent (as the audio drive decides)."""
    m = np.round(np.asarray(times, np.float64) * audio.MEL_FPS).astype(np.int64)
    out = np.ones(len(m), bool)
    for i, c in enumerate(m):
        a, b = max(0, c - 2), min(len(mel), c + 2)
        if b > a:
            out[i] = float(np.mean(mel[a:b])) < SILENCE_LEVEL
    return out


def evidence_curve(video_gap: np.ndarray, audio_gap: np.ndarray, vshift: int = VSHIFT) -> np.ndarray:
    """(2·vshift+1,) Pearson correlation between the tracked gap of video frame i and the
    predicted gap of audio frame i + k, for k = −vshift…+vshift (entry k + vshift), over the
    frames where both are finite; nan where fewer than :data:`MIN_OVERLAP` frames overlap."""
    v = np.asarray(video_gap, np.float64)
    a = np.asarray(audio_gap, np.float64)
    n = len(v)
    out = np.full(2 * vshift + 1, np.nan)
    for j, k in enumerate(range(-vshift, vshift + 1)):
        i0, i1 = max(0, -k), min(n, len(a) - k)
        if i1 - i0 < MIN_OVERLAP:
            continue
        x, y = v[i0:i1], a[i0 + k : i1 + k]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < MIN_OVERLAP:
            continue
        x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
        d = float(np.sqrt((x * x).sum() * (y * y).sum()))
        out[j] = float((x * y).sum() / d) if d > 1e-12 else np.nan
    return out


def curve_offset(scores: np.ndarray) -> int:
    """The offset (syncnet_python's sign) at the highest score: −k of its shift."""
    vshift = (len(scores) - 1) // 2
    return vshift - int(np.nanargmax(scores))


def confidence(curve: np.ndarray) -> float:
    """Peak minus median of a correlation curve (nan when it has no finite entry)."""
    c = np.asarray(curve, np.float64)
    if not np.isfinite(c).any():
        return float("nan")
    return float(np.nanmax(c) - np.nanmedian(c))


def standardise(curve: np.ndarray) -> np.ndarray:
    """Over the shifts: mean 0, deviation 1 (nan entries become 0, the mean)."""
    c = np.asarray(curve, np.float64)
    ok = np.isfinite(c)
    out = np.zeros_like(c)
    if ok.sum() < 2:
        return out
    sd = float(c[ok].std())
    out[ok] = (c[ok] - c[ok].mean()) / sd if sd > 1e-12 else 0.0
    return out


def unbiased(curve: np.ndarray, bias: int) -> np.ndarray:
    """The curve with its offsets moved by −bias (nan where nothing moves in)."""
    c = np.asarray(curve, np.float64)
    out = np.full_like(c, np.nan)
    if bias == 0:
        return c.copy()
    if abs(bias) >= len(c):
        return out
    if bias > 0:  # offset = vshift - j: a smaller offset is a larger index
        out[bias:] = c[:-bias]
    else:
        out[:bias] = c[-bias:]
    return out


def centre(curve: np.ndarray) -> np.ndarray:
    """Over the shifts: mean 0 (nan entries become 0, the mean)."""
    c = np.asarray(curve, np.float64)
    ok = np.isfinite(c)
    out = np.zeros_like(c)
    if ok.any():
        out[ok] = c[ok] - c[ok].mean()
    return out


def combined_scores(distances: np.ndarray, curve: np.ndarray, weight: float) -> np.ndarray:
    """−standardised expert distances + weight · standardised evidence correlations."""
    return -standardise(distances) + weight * standardise(curve)


def combine(
    distances: np.ndarray, curve: np.ndarray, rule: CombineRule = DEFAULT_RULE, phone_curve: np.ndarray | None = None
) -> OffsetChoice:
    """The offsets of the expert's distance curve, of the evidence's correlation curve (and of
    the recognised phones' curve, when given), and of their combination under ``rule``: the
    expert alone when no evidence is usable."""
    d = np.asarray(distances, np.float64)
    c = np.asarray(curve, np.float64)
    if d.shape != c.shape or (phone_curve is not None and np.shape(phone_curve) != d.shape):
        raise ValueError(f"curves over different shifts: {d.shape}, {c.shape}")
    expert = curve_offset(-d)
    c = unbiased(c, rule.bias)
    conf = confidence(c)
    evidence = curve_offset(c) if np.isfinite(c).any() else None
    norm = centre if rule.absolute else standardise
    scores = -norm(d)
    used = False
    if _usable(c, conf, rule.min_confidence) and rule.weight > 0:
        scores = scores + rule.weight * norm(c)
        used = True
    phones, pconf = None, float("nan")
    if phone_curve is not None:
        pc = unbiased(np.asarray(phone_curve, np.float64), rule.phone_bias)
        pconf = confidence(pc)
        phones = curve_offset(pc) if np.isfinite(pc).any() else None
        if _usable(pc, pconf, rule.min_confidence) and rule.phone_weight > 0:
            scores = scores + rule.phone_weight * norm(pc)
            used = True
    if not used:
        return OffsetChoice(expert, evidence, expert, "expert", conf, c, phones, pconf)
    return OffsetChoice(expert, evidence, curve_offset(scores), "combined", conf, c, phones, pconf)


def _usable(curve: np.ndarray, conf: float, min_confidence: float) -> bool:
    return bool(np.isfinite(curve).sum() >= 3) and conf >= min_confidence


# --- recognised phones (pocketsphinx, when installed) -----------------------------------------

PHONE_FRAME_S = 0.01  # pocketsphinx's frame


@dataclass(frozen=True)
class PhoneSpan:
    cls: int  # index into rtdub.drive.phones.VISEME_CLASSES
    start: float  # s
    end: float


class PhoneRecogniser:
    """Phones of 16 kHz speech by pocketsphinx's bundled en-us model: words with its language
    model, then those words force-aligned (acoustic boundaries); the phone loop where they
    cannot be aligned. Each phone becomes its visual class (rtdub.drive.phones.arpabet_class).
    ModelError when pocketsphinx is not installed (it is in rtdub's ``train`` extra)."""

    def __init__(self, mode: str = "aligned") -> None:
        import os

        if mode not in ("aligned", "loop"):
            raise ValueError(f"mode must be 'aligned' or 'loop', not {mode!r}")
        self.mode = mode  # "loop": the phone loop alone, no words
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:
            raise ModelError("pocketsphinx is not installed (pip install pocketsphinx)") from exc
        try:
            root = os.path.join(get_model_path(), "en-us")
            self._words = Decoder(
                hmm=os.path.join(root, "en-us"),
                lm=os.path.join(root, "en-us.lm.bin"),
                dict=os.path.join(root, "cmudict-en-us.dict"),
                samprate=audio.SAMPLE_RATE,
                loglevel="ERROR",
            )
            self._loop = Decoder(
                hmm=os.path.join(root, "en-us"),
                allphone=os.path.join(root, "en-us-phone.lm.bin"),
                lw=2.0,
                beam=1e-20,
                pbeam=1e-20,
                samprate=audio.SAMPLE_RATE,
                loglevel="ERROR",
            )
        except (RuntimeError, OSError, ValueError) as exc:  # a broken or partial install
            raise ModelError(f"pocketsphinx cannot load its en-us model ({exc})") from exc

    @staticmethod
    def _decode(decoder: object, pcm: bytes) -> None:
        decoder.start_utt()  # type: ignore[attr-defined]
        decoder.process_raw(pcm, full_utt=True)  # type: ignore[attr-defined]
        decoder.end_utt()  # type: ignore[attr-defined]

    def spans(self, wav: np.ndarray) -> list[PhoneSpan]:
        """Visual-class spans of 16 kHz float ``wav`` (pauses included)."""
        from ..drive.phones import PAUSE, arpabet_class

        def cls(name: str) -> int:
            c = arpabet_class(name)
            return PAUSE if c is None else c

        pcm = (np.clip(np.asarray(wav, np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()
        d = self._words
        text = ""
        if self.mode == "aligned":
            self._decode(d, pcm)
            hyp = d.hyp()
            text = hyp.hypstr.strip() if hyp is not None else ""
        if text:
            try:
                d.set_align_text(text)
                self._decode(d, pcm)
                d.set_alignment()
                self._decode(d, pcm)
                out = [
                    PhoneSpan(cls(p.name), p.start * PHONE_FRAME_S, (p.start + p.duration) * PHONE_FRAME_S)
                    for w in d.get_alignment()
                    for p in w
                ]
                if out:
                    return out
            except RuntimeError as exc:  # the aligner rejects the hypothesis
                logger.info("phone alignment failed (%s): phone loop instead", exc)
            finally:
                d.activate_search()
        self._decode(self._loop, pcm)
        return [
            PhoneSpan(cls(g.word), g.start_frame * PHONE_FRAME_S, (g.end_frame + 1) * PHONE_FRAME_S)
            for g in self._loop.seg()
        ]


def span_classes(spans: list[PhoneSpan], times: np.ndarray) -> np.ndarray:
    """(N,) the visual class sounding at each time; pause (0) outside every span."""
    t = np.asarray(times, np.float64)
    out = np.zeros(len(t), np.int64)
    for s in spans:
        out[(t >= s.start) & (t < s.end)] = s.cls
    return out


# Mean z-scored inner-lip gap of each visual class (rtdub.drive.phones.VISEME_CLASSES order) on
# the real training identities' clips, their own lags removed (benchmarks/av_offset.py --fit)
CLASS_GAP: tuple[float, ...] = (
    -0.3962, -0.4799, -0.777, -0.4868, 1.0407, 0.0769, 0.3486, 0.0095, -0.1666, -0.0622, -0.0563, 0.3583, 0.0,
)  # fmt: skip


def phone_gap(spans: list[PhoneSpan], times: np.ndarray, table: tuple[float, ...] = CLASS_GAP) -> np.ndarray:
    """The inner-lip gap the recognised phones predict at ``times``: their class's mean."""
    return np.asarray(table, np.float64)[span_classes(spans, times)]
