"""rtdub.tts against the real espeak-ng library (from the espeakng-loader wheel)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from rtdub import tts  # noqa: E402
from rtdub.exceptions import RtdubError  # noqa: E402


@pytest.fixture(scope="module")
def papa() -> tts.Speech:
    return tts.synthesize("papa mama", voice="en")


def _spoken(speech: tts.Speech) -> list[str]:
    return [p.symbol for p in speech.phonemes if p.symbol not in tts.PAUSES]


def test_audio_is_speech_and_matches_phonemes(papa: tts.Speech) -> None:
    assert papa.sample_rate == 22050
    assert papa.samples.dtype == np.float32 and papa.samples.ndim == 1
    assert 0.3 < papa.duration < 3.0
    rms = float(np.sqrt(np.mean(papa.samples.astype(np.float64) ** 2)))
    assert rms > 0.01
    assert float(np.abs(papa.samples).max()) <= 1.0
    assert papa.phonemes
    assert abs(papa.phonemes[-1].end - papa.duration) < 0.1


def test_phoneme_times_increase_and_tile(papa: tts.Speech) -> None:
    starts = [p.start for p in papa.phonemes]
    assert all(b > a for a, b in zip(starts[:-1], starts[1:], strict=True))
    for p, q in zip(papa.phonemes[:-1], papa.phonemes[1:], strict=True):
        assert p.end == pytest.approx(q.start)
        assert p.end > p.start
    assert starts[0] >= 0.0
    assert starts[0] < 0.2  # speech starts right away


def test_papa_mama_phonemes(papa: tts.Speech) -> None:
    spoken = _spoken(papa)
    assert spoken[0] == "p"
    assert spoken.count("p") == 2 and spoken.count("m") == 2
    assert sum(s in tts.BILABIALS for s in spoken) == 4
    assert any(s in tts.OPEN_VOWELS for s in spoken)
    assert not any(s.startswith(("'", ",")) for s in spoken)  # stress marks are split off
    assert any(p.stress == 2 for p in papa.phonemes)


def test_bilabial_audio_is_quieter_than_open_vowels(papa: tts.Speech) -> None:
    """Checks the timings against the audio: lips closed → little energy (p is silent)."""

    def energy(symbols: frozenset[str]) -> float:
        values = []
        for p in papa.phonemes:
            if p.symbol in symbols:
                a, b = int(p.start * papa.sample_rate), int(p.end * papa.sample_rate)
                values.append(float(np.mean(papa.samples[a:b].astype(np.float64) ** 2)))
        return float(np.mean(values))

    assert energy(frozenset({"p"})) < 0.2 * energy(tts.OPEN_VOWELS)


def test_german_voice() -> None:
    speech = tts.synthesize("Papa und Mama haben Hunger.", voice="de")
    spoken = _spoken(speech)
    assert {"p", "m", "b"} <= set(spoken)
    assert {"A", "A:"} & set(spoken)
    assert "N" in spoken  # "Hunger": German rules, not English ones
    assert abs(speech.phonemes[-1].end - speech.duration) < 0.1


def test_rate_changes_duration() -> None:
    slow = tts.synthesize("one two three four", voice="en", rate=100)
    fast = tts.synthesize("one two three four", voice="en", rate=300)
    assert fast.duration < 0.7 * slow.duration


def test_language_code_and_name_select_voices() -> None:
    for voice in ("en-gb", "fr-fr", "German", "gmw/de"):
        assert _spoken(tts.synthesize("mama", voice=voice))


def test_unknown_voice_raises() -> None:
    with pytest.raises(RtdubError, match="unknown espeak voice"):
        tts.synthesize("hello", voice="xx-nonsense")
    with pytest.raises(RtdubError):
        tts.synthesize("hello", voice="")


def test_bad_parameters_raise() -> None:
    with pytest.raises(RtdubError, match="rate"):
        tts.synthesize("hello", rate=10)
    with pytest.raises(RtdubError, match="pitch"):
        tts.synthesize("hello", pitch=500)


def test_empty_text_gives_empty_speech() -> None:
    speech = tts.synthesize("   ", voice="en")
    assert speech.duration == 0.0 and speech.phonemes == ()
    assert tts.frames_with(speech, tts.BILABIALS, 25).shape == (0,)


def test_available_voices() -> None:
    voices = tts.available_voices()
    assert {"en", "de", "fr", "es", "en-gb", "en-us"} <= set(voices)
    assert voices == sorted(voices)
    assert "fo" not in voices  # its dictionary is not in the wheel


def test_frames_with_marks_bilabial_cores(papa: tts.Speech) -> None:
    fps = 100.0
    frames = tts.frames_with(papa, tts.BILABIALS, fps)
    assert frames.dtype == bool
    assert frames.shape == (int(np.ceil(papa.duration * fps)),)
    assert frames.any() and not frames.all()
    bilabials = [p for p in papa.phonemes if p.symbol in tts.BILABIALS]
    times = np.arange(frames.shape[0]) / fps
    for k in np.flatnonzero(frames):
        assert any(p.start < times[k] < p.end for p in bilabials)
    for p in bilabials:  # every bilabial ≥ 30 ms long has a frame at its middle
        if p.end - p.start >= 0.03:
            assert frames[int(round((p.start + p.end) / 2 * fps))]
    # Boundaries do not count: no frame is within 20% of a phoneme's length of its edges.
    for p in bilabials:
        margin = 0.2 * (p.end - p.start) - 1e-9
        edge = ((times > p.start - 1e-9) & (times < p.start + margin)) | (
            (times > p.end - margin) & (times < p.end + 1e-9)
        )
        assert not frames[edge].any()


def test_frames_with_exact_core() -> None:
    speech = tts.Speech(
        np.zeros(22050, dtype=np.float32),
        22050,
        (
            tts.Phoneme("_", 0.0, 0.2),
            tts.Phoneme("m", 0.2, 0.75),
            tts.Phoneme("a", 0.75, 0.98, stress=2),
            tts.Phoneme("_:", 0.98, 1.0),
        ),
    )
    # m: central 60% is 0.31-0.64 s → frames at 0.4, 0.5, 0.6 s
    frames = tts.frames_with(speech, tts.BILABIALS, 10)
    assert frames.tolist() == [False] * 4 + [True] * 3 + [False] * 3
    # a: central 60% is 0.796-0.934 s → frames at 0.8, 0.9 s
    assert tts.frames_with(speech, tts.OPEN_VOWELS, 10).tolist() == [False] * 8 + [True] * 2
    # the whole phoneme when core=1
    assert tts.frames_with(speech, tts.BILABIALS, 10, core=1.0).tolist() == ([False] * 2 + [True] * 6 + [False] * 2)


def test_resampled_keeps_duration(papa: tts.Speech) -> None:
    low = papa.resampled(16000)
    assert low.sample_rate == 16000
    assert low.duration == pytest.approx(papa.duration, abs=1e-3)
    assert low.phonemes == papa.phonemes
    assert low.samples.dtype == np.float32
    rms_hi = np.sqrt(np.mean(papa.samples.astype(np.float64) ** 2))
    rms_lo = np.sqrt(np.mean(low.samples.astype(np.float64) ** 2))
    assert rms_lo == pytest.approx(rms_hi, rel=0.1)
    assert papa.resampled(22050) is papa


def test_concurrent_calls_are_serialised() -> None:
    results: dict[str, tts.Speech] = {}

    def run(voice: str) -> None:
        results[voice] = tts.synthesize("mama papa", voice=voice)

    threads = [threading.Thread(target=run, args=(v,)) for v in ("en", "de", "fr", "es")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"en", "de", "fr", "es"}
    for speech in results.values():
        spoken = _spoken(speech)
        assert spoken[0] == "m"
        assert sum(s in tts.BILABIALS for s in spoken) == 4
        assert abs(speech.phonemes[-1].end - speech.duration) < 0.1


def _sound(spans: list[tuple[float, float]], seconds: float, sr: int = 16000) -> np.ndarray:
    """Noise at -10 dB inside ``spans`` (seconds), digital silence elsewhere."""
    rng = np.random.default_rng(0)
    x = np.zeros(int(seconds * sr), np.float32)
    for a, b in spans:
        x[int(a * sr) : int(b * sr)] = rng.normal(0, 0.3, int(b * sr) - int(a * sr))
    return x


def test_lip_closures_put_a_stops_closure_before_its_release() -> None:
    # "a p a b a m a": /p/ released at 0.55 s after 50 ms of silence (espeak's timing: the
    # event is the burst); /b/ voiced, no silence before it; /m/ a murmur
    phonemes = (
        tts.Phoneme("a", 0.2, 0.55),
        tts.Phoneme("p", 0.55, 0.6),
        tts.Phoneme("a", 0.6, 0.9),
        tts.Phoneme("b", 0.9, 1.0),
        tts.Phoneme("a", 1.0, 1.3),
        tts.Phoneme("m", 1.3, 1.4),
        tts.Phoneme("a", 1.4, 1.7),
    )
    speech = tts.Speech(_sound([(0.2, 0.5), (0.55, 1.7)], 1.8), 16000, phonemes)
    (p, p0, p1), (b, b0, b1), (m, m0, m1) = tts.lip_closures(speech)
    assert (p.symbol, b.symbol, m.symbol) == ("p", "b", "m")
    assert abs(p0 - 0.5) <= 0.006 and p1 == pytest.approx(0.55 + 0.2 * 0.05)
    assert (b0, b1) == pytest.approx((0.9, 0.9 + 0.6 * 0.1))
    assert (m0, m1) == pytest.approx((1.3, 1.4))
    frames = tts.closure_frames(speech, 100)
    assert frames[52:55].all() and not frames[57:60].any()  # the silence, not the burst after it
    assert not tts.frames_with(speech, tts.BILABIALS, 100)[52:55].any()  # the label alone misses it


def test_lip_closures_bound_a_long_silence() -> None:
    phonemes = (tts.Phoneme("_", 0.0, 0.6), tts.Phoneme("p", 0.6, 0.65), tts.Phoneme("a", 0.65, 1.0))
    speech = tts.Speech(_sound([(0.6, 1.0)], 1.0), 16000, phonemes)
    ((_, a, b),) = tts.lip_closures(speech, max_closure=0.12)
    assert a == pytest.approx(0.6 - 0.12, abs=1e-6) and b == pytest.approx(0.61)


def test_lip_closures_of_real_speech(papa: tts.Speech) -> None:
    closures = tts.lip_closures(papa)
    bilabials = [p for p in papa.phonemes if p.symbol in tts.BILABIALS]
    assert [p for p, _, _ in closures] == bilabials and len(bilabials) == 4
    for p, a, b in closures:
        assert a <= p.start < b <= p.end
        if p.symbol == "p":  # the silent closure before the burst is found
            assert p.start - a >= 0.02
