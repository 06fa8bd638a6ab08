"""The mouth-opening evidence for the AV offset (rtdub/measure/phonesync.py), its combination
with the lip-sync expert, and what ``rtdub eval`` reports of it. Generated signals only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtdub import audio
from rtdub.measure.avsync import VSHIFT, lse
from rtdub.measure.phonesync import (
    DEFAULT_RULE,
    MIN_OVERLAP,
    CombineRule,
    GapPredictor,
    combine,
    confidence,
    curve_offset,
    evidence_curve,
    standardise,
    unbiased,
)

from .factories import speechlike, write_wav
from .test_cli import run_cli


def smooth_track(n: int, seed: int) -> np.ndarray:
    """A mouth-opening-like track: smoothed noise, 2-4 syllables a second."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n + 8)
    k = np.hanning(7)
    return np.convolve(x, k / k.sum(), mode="same")[4 : 4 + n]


def planted(lag: int, n: int = 150, noise: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(video gap, audio gap) where the sound of video frame i sits at audio frame i + lag."""
    rng = np.random.default_rng(seed + 100)
    g = smooth_track(n + 40, seed)
    video = g[20 : 20 + n]
    audio_gap = g[20 - lag : 20 - lag + n] + noise * rng.standard_normal(n) * g.std()
    return video, audio_gap


@pytest.mark.parametrize("lag", [-9, -3, 0, 2, 7, 13])
def test_evidence_curve_recovers_a_planted_shift(lag: int) -> None:
    v, a = planted(lag)
    c = evidence_curve(v, a)
    assert c.shape == (2 * VSHIFT + 1,)
    assert int(np.nanargmax(c)) == lag + VSHIFT  # the peak pairs video i with audio i + lag
    assert curve_offset(c) == -lag  # syncnet_python's sign: the audio lags -> negative
    assert c[lag + VSHIFT] > 0.6 and confidence(c) > 0.4


def test_evidence_curve_ignores_missing_frames_and_needs_overlap() -> None:
    v, a = planted(4, seed=3)
    v = v.copy()
    v[10:40] = np.nan  # no face there
    a = a.copy()
    a[::7] = np.nan  # silent frames
    assert curve_offset(evidence_curve(v, a)) == -4
    short = evidence_curve(v[: MIN_OVERLAP - 1], a[: MIN_OVERLAP - 1])
    assert np.isnan(short).all()
    flat = evidence_curve(np.ones(100), a[:100])
    assert np.isnan(flat).all()  # a mouth that never moves has no correlation


def test_same_sign_as_the_expert() -> None:
    """A clip whose audio lags by 5 frames: the expert and the evidence agree on −5."""
    rng = np.random.default_rng(4)
    n, e, lag = 120, 16, 5
    emb = rng.standard_normal((n + 40, e))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    vid = emb[20 + lag : 20 + lag + n] + 0.2 * rng.standard_normal((n, e))  # video i's sound: audio i + lag
    assert lse(vid / np.linalg.norm(vid, axis=1, keepdims=True), emb[20 : 20 + n]).offset == -lag
    v, a = planted(lag, n=n)
    assert curve_offset(evidence_curve(v, a)) == -lag


def test_standardise() -> None:
    c = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    z = standardise(c)
    assert z[2] == 0.0
    assert z[[0, 1, 3, 4]].mean() == pytest.approx(0.0) and z[[0, 1, 3, 4]].std() == pytest.approx(1.0)
    assert (standardise(np.full(5, 3.0)) == 0).all()
    assert (standardise(np.array([np.nan, 1.0, np.nan])) == 0).all()


@pytest.mark.parametrize("bias", [-3, 0, 2, 5])
def test_bias_moves_the_evidence_offset(bias: int) -> None:
    v, a = planted(-2, seed=6)
    c = evidence_curve(v, a)
    assert curve_offset(unbiased(c, bias)) == curve_offset(c) - bias
    assert combine(np.zeros_like(c), c, CombineRule(1.0, 0.0, bias)).evidence == 2 - bias


def expert_curve(offset: int, depth: float = 0.1, second: int | None = None, second_depth: float = 0.0) -> np.ndarray:
    """Distances over the 31 offsets: a minimum at ``offset`` (syncnet_python's sign)."""
    d = np.full(2 * VSHIFT + 1, 1.0) + 0.002 * np.sin(np.arange(2 * VSHIFT + 1))
    d[VSHIFT - offset] -= depth
    if second is not None:
        d[VSHIFT - second] -= second_depth
    return d


def evidence_peak(offset: int, height: float = 0.5) -> np.ndarray:
    c = 0.05 * np.cos(np.arange(2 * VSHIFT + 1))
    c[VSHIFT - offset] += height
    return c


def test_combination_rule() -> None:
    # the expert is sure of +3 and nearly as sure of -2; the evidence says -2
    d = expert_curve(3, 0.10, second=-2, second_depth=0.09)
    c = evidence_peak(-2)
    assert combine(d, c, CombineRule(weight=0.0)).combined == 3
    got = combine(d, c, CombineRule(weight=0.75))
    assert (got.expert, got.evidence, got.combined, got.used) == (3, -2, -2, "combined")
    # a sharp expert is not overruled by the evidence at a moderate weight, only at a large one
    sharp = expert_curve(3, 0.5)
    assert combine(sharp, c, CombineRule(weight=0.75)).combined == 3
    assert combine(sharp, c, CombineRule(weight=20.0)).combined == -2
    # a flat evidence curve is left out by min_confidence; a missing one always
    weak = evidence_peak(-2, 0.02)
    gated = combine(d, weak, CombineRule(weight=5.0, min_confidence=0.1))
    assert (gated.combined, gated.used) == (3, "expert")
    none = combine(d, np.full_like(c, np.nan), CombineRule(weight=5.0))
    assert (none.combined, none.evidence, none.used) == (3, None, "expert")
    with pytest.raises(ValueError):
        combine(d, c[:-1])


def test_phone_curve_joins_the_combination() -> None:
    d = expert_curve(3, 0.10, second=-2, second_depth=0.09)
    flat = np.full(2 * VSHIFT + 1, np.nan)
    phones = evidence_peak(0)  # read 2 frames late: its offset is -2 once the bias is removed
    rule = CombineRule(weight=0.0, phone_weight=1.0, phone_bias=2)
    got = combine(d, flat, rule, phones)
    assert (got.phones, got.evidence, got.combined, got.used) == (-2, None, -2, "combined")
    assert combine(d, flat, CombineRule(weight=0.0, phone_weight=0.0), phones).used == "expert"
    assert combine(d, flat, rule, None).combined == 3


def test_phone_spans_to_a_gap_track() -> None:
    from rtdub.drive.phones import BILABIAL, OPEN, PAUSE
    from rtdub.measure.phonesync import PhoneSpan, phone_gap, span_classes

    spans = [PhoneSpan(BILABIAL, 0.1, 0.2), PhoneSpan(OPEN, 0.2, 0.35)]
    t = np.array([0.0, 0.15, 0.2, 0.3, 0.4])
    assert span_classes(spans, t).tolist() == [PAUSE, BILABIAL, OPEN, OPEN, PAUSE]
    table = tuple(float(i) for i in range(13))
    assert phone_gap(spans, t, table).tolist() == [PAUSE, BILABIAL, OPEN, OPEN, PAUSE]


def test_phone_recogniser_spans() -> None:
    pytest.importorskip("pocketsphinx")
    from rtdub.drive.phones import N_CLASSES
    from rtdub.measure.phonesync import PhoneRecogniser

    with pytest.raises(ValueError):
        PhoneRecogniser("words")
    wav = speechlike(2.0, seed=4)
    for mode in ("aligned", "loop"):
        spans = PhoneRecogniser(mode).spans(wav)
        assert spans, mode
        assert all(0 <= p.cls < N_CLASSES and p.end > p.start for p in spans)
        assert all(a.end <= b.start + 1e-6 for a, b in zip(spans, spans[1:], strict=False))
        assert spans[-1].end <= 2.0 + 0.05


def test_default_rule_is_the_benchmarked_one() -> None:
    """benchmarks/results/av_offset.md chose it (and the class table) on the training identities."""
    from rtdub.measure.phonesync import CLASS_GAP

    assert DEFAULT_RULE.weight == 0.0 and DEFAULT_RULE.phone_weight == 0.2 and DEFAULT_RULE.absolute
    res = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "av_offset.json"
    if res.is_file():
        r = json.loads(res.read_text())
        rule = r["variants"][r["chosen"]]["rule"]
        assert (rule["phone_weight"], rule["phone_bias"], rule["absolute"]) == (0.2, 0, True)
        assert r["class_gap"] == pytest.approx(CLASS_GAP, abs=1e-4)


def test_gap_predictor_hears_speech_and_silence() -> None:
    gp = GapPredictor(threads=1)
    wav = np.concatenate([np.zeros(16000, np.float32), speechlike(2.0, seed=2)])
    mel = audio.melspectrogram(audio.normalize_loudness(wav))
    times = np.arange(0, 3.0, 0.04)
    g = gp.predict(mel, times)
    assert g.shape == times.shape and g.dtype == np.float32
    assert np.isnan(g[times < 0.9]).all()  # the silent first second gives no evidence
    speech = g[(times > 1.2) & np.isfinite(g)]
    assert len(speech) > 20 and speech.std() > 0.05
    assert gp.predict(mel, np.zeros(0)).shape == (0,)


# --- rtdub eval ----------------------------------------------------------------------------


def test_eval_reports_both_offsets(talking_clip: Path) -> None:
    from rtdub.measure.avsync import SyncNetExpert
    from rtdub.measure.scoring import evaluate_files, format_report

    ex = SyncNetExpert(threads=1)
    rep = evaluate_files(talking_clip, talking_clip, None, ex)
    assert rep.av_offset_from in ("combined", "expert")
    assert isinstance(rep.av_offset_expert, int) and -VSHIFT <= rep.av_offset <= VSHIFT
    if rep.av_offset_from == "expert":
        assert rep.av_offset == rep.av_offset_expert
    text = "\n".join(format_report(rep))
    assert f"AV offset {rep.av_offset:+d} frames" in text and "lip-sync expert" in text

    alone = evaluate_files(talking_clip, talking_clip, None, ex, use_evidence=False)
    assert alone.av_offset == alone.av_offset_expert == rep.av_offset_expert
    assert alone.av_offset_from == "expert" and alone.av_offset_evidence is None
    assert alone.evidence_confidence is None
    assert "the lip-sync expert alone" in "\n".join(format_report(alone))


def test_eval_json_gains_the_offset_fields(talking_clip: Path, media_dir: Path) -> None:
    other = write_wav(media_dir / "phonesync_other.wav", speechlike(2.0, seed=11))
    res = run_cli("eval", "--video", str(talking_clip), "--audio", str(other), "--threads", "1", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert {"av_offset", "av_offset_expert", "av_offset_evidence", "av_offset_from", "evidence_confidence"} <= set(rep)
    assert rep["av_offset_from"] in ("combined", "expert")
    res = run_cli("eval", "--video", str(talking_clip), "--audio", str(other), "--no-evidence", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["av_offset_from"] == "expert" and rep["av_offset"] == rep["av_offset_expert"]
    assert rep["av_offset_evidence"] is None
