"""Text alignment (rtdub/drive/textalign.py): a known text's phonemes timed on dubbed audio.

The "dubbed" audio is espeak-ng speech too, but by another voice variant, at another rate and
pitch, spoken phrase by phrase with silences of other lengths between the phrases; its own
phoneme events (and rtdub.drive.events.from_speech of them over its audio) are the truth.
The reference the aligner speaks is espeak's default voice of the language at 160 words per
minute, without those pauses."""

from __future__ import annotations

import difflib
import logging
import math

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from rtdub import tts  # noqa: E402
from rtdub.drive import textalign  # noqa: E402
from rtdub.drive.events import PhoneTimeline, from_speech  # noqa: E402
from rtdub.drive.phones import BILABIAL, OPEN, PAUSE  # noqa: E402
from rtdub.drive.textalign import MAX_COST, TextAlignment, align_text, check_language  # noqa: E402
from rtdub.exceptions import InputError  # noqa: E402

FPS = 25.0


class Dub:
    """Speech joined from phrases, with the truth: its phonemes on its own clock."""

    def __init__(self, phrases: list[str], voice: str, rate: int, pitch: int, pauses: list[float]) -> None:
        chunks: list[np.ndarray] = []
        events: list[tts.Phoneme] = []
        self.phrase_spans: list[tuple[float, float]] = []
        t = 0.0
        sr = 22050
        for k, phrase in enumerate(phrases):
            sp = tts.synthesize(phrase, voice=voice, rate=rate, pitch=pitch)
            sr = sp.sample_rate
            events += [tts.Phoneme(p.symbol, p.start + t, p.end + t, p.stress) for p in sp.phonemes]
            chunks.append(sp.samples)
            self.phrase_spans.append((t, t + sp.duration))
            t += sp.duration
            if k < len(pauses):
                chunks.append(np.zeros(int(round(pauses[k] * sr)), np.float32))
                t += len(chunks[-1]) / sr
        self.speech = tts.Speech(np.concatenate(chunks), sr, tuple(events))

    @property
    def samples(self) -> np.ndarray:
        return self.speech.samples

    @property
    def sample_rate(self) -> int:
        return self.speech.sample_rate

    def truth(self) -> PhoneTimeline:
        return from_speech(self.speech)


def start_errors(result: TextAlignment, truth: tuple[tts.Phoneme, ...]) -> np.ndarray:
    """|aligned start - true start| (s) of the spoken phonemes, matched by symbol."""
    a = [p for p in result.phonemes if p.symbol not in tts.PAUSES]
    b = [p for p in truth if p.symbol not in tts.PAUSES]
    sm = difflib.SequenceMatcher(None, [p.symbol for p in a], [p.symbol for p in b], autojunk=False)
    err = [abs(a[i + k].start - b[j + k].start) for i, j, n in sm.get_matching_blocks() for k in range(n)]
    assert len(err) >= 0.9 * len(b), f"only {len(err)} of {len(b)} phonemes matched by symbol"
    return np.array(err)


def class_at(tl: PhoneTimeline, times: np.ndarray) -> np.ndarray:
    """The class at each time, -1 where no event covers it."""
    out = np.full(len(times), -1, np.int64)
    if not len(tl.starts):
        return out
    k = np.searchsorted(tl.starts, times, side="right") - 1
    inside = (k >= 0) & (times < tl.ends[np.maximum(k, 0)])
    out[inside] = tl.classes[k[inside]]
    return out


def agreement(result: TextAlignment, dub: Dub, cls: int) -> tuple[float, int]:
    """Share of the video frames inside the central 60 % of a truth event of class ``cls``
    whose aligned class is ``cls`` too, and how many such frames there are."""
    truth = dub.truth()
    spans = [(float(a), float(b)) for a, b, c in zip(truth.starts, truth.ends, truth.classes, strict=True) if c == cls]
    frames = tts.frames_in(dub.speech, spans, FPS, 0.6)
    times = np.flatnonzero(frames) / FPS
    return float(np.mean(class_at(result.timeline, times) == cls)) if len(times) else math.nan, len(times)


EN = ["Peter bought a big map of Madrid,", "and he walked home", "past the old market."]
EN2 = ["My brother baked apple pie", "for the party,", "but nobody came before midnight."]
ES = ["Mi papá compró un mapa grande,", "y caminó despacio", "hasta la playa."]
DE = ["Mein Bruder baut ein kleines Boot,", "aber am Abend", "spielt er Klavier im Park."]
FR = ["Mon papa a acheté une belle pomme,", "puis il a marché", "jusqu'à la mer."]

CASES = {
    # name: (language, phrases, dub voice, rate, pitch, pauses between the phrases)
    "en female slow low": ("en", EN, "en+f3", 120, 25, [0.0, 0.0]),
    "en male7 fast high": ("en", EN2, "en+m7", 220, 80, [0.0, 0.0]),
    "en klatt pauses": ("en", EN, "en+klatt", 180, 60, [0.6, 0.25]),
    "es female fast pauses": ("es", ES, "es+f2", 200, 30, [0.5, 0.9]),
    "de male slow pauses": ("de", DE, "de+m3", 140, 30, [0.8, 0.3]),
    "fr female fast pauses": ("fr", FR, "fr+f4", 190, 75, [0.4, 1.0]),
}


@pytest.fixture(scope="module")
def aligned() -> dict[str, tuple[Dub, TextAlignment]]:
    out = {}
    for name, (language, phrases, voice, rate, pitch, pauses) in CASES.items():
        dub = Dub(phrases, voice, rate, pitch, pauses)
        out[name] = (dub, align_text(" ".join(phrases), language, dub.samples, dub.sample_rate))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_boundaries_land_where_the_dub_speaks_them(name: str, aligned: dict[str, tuple[Dub, TextAlignment]]) -> None:
    dub, res = aligned[name]
    assert res.ok and res.cost < MAX_COST
    err = start_errors(res, dub.speech.phonemes)
    assert np.median(err) < 0.03, f"median {1000 * np.median(err):.1f} ms"
    assert np.percentile(err, 90) < 0.08, f"90th percentile {1000 * np.percentile(err, 90):.1f} ms"
    for cls in (BILABIAL, OPEN):
        share, n = agreement(res, dub, cls)
        assert n >= 4, "the text should hold enough of the class to measure"
        assert share >= 0.85, f"class {cls}: {share:.2f} of {n} frames"


@pytest.mark.parametrize("name", list(CASES))
def test_timeline_covers_the_dub_on_its_clock(name: str, aligned: dict[str, tuple[Dub, TextAlignment]]) -> None:
    dub, res = aligned[name]
    tl = res.timeline
    assert tl.source == "text"
    duration = dub.speech.duration
    assert res.confident_s >= 0.9 * duration  # the right text: confident nearly everywhere
    assert tl.span[0] >= 0.0 and tl.span[1] <= duration + 1e-9
    for a, b in res.confident.tolist():
        assert tl.covered(a, b)
    starts = [p.start for p in res.phonemes]
    assert starts == sorted(starts) and all(p.end >= p.start for p in res.phonemes)
    ref_times = np.linspace(0.0, len(res.spans) / textalign.FPS, 50)
    assert np.all(np.diff(res.to_dub(ref_times)) >= -1e-9)  # the warping keeps the order


def test_voice_scale_follows_the_dubs_vocal_tract(aligned: dict[str, tuple[Dub, TextAlignment]]) -> None:
    """espeak's female variants raise the formants by 15-35 %: the reference is warped up to
    meet them; a male variant needs (almost) none."""
    assert aligned["en female slow low"][1].alpha > 1.1
    assert aligned["fr female fast pauses"][1].alpha > 1.1
    assert 0.9 < aligned["de male slow pauses"][1].alpha < 1.08
    assert abs(aligned["en female slow low"][1].rate - 120) <= 15  # spoken again at the dub's rate
    assert abs(aligned["en male7 fast high"][1].rate - 220) <= 25


def test_a_long_pause_is_a_pause_not_a_stretched_phoneme() -> None:
    """1.5 s of silence where the reference runs straight on: the frames inside it read as a
    pause, an inserted ``_`` phoneme holds it, and the next word starts on time."""
    phrases = ["Please pass the paper", "plates and a bowl of warm soup."]
    dub = Dub(phrases, "en+f2", 170, 60, [1.5])
    res = align_text(" ".join(phrases), "en", dub.samples, dub.sample_rate)
    assert res.ok
    gap0, gap1 = dub.phrase_spans[0][1], dub.phrase_spans[1][0]
    times = np.arange(math.ceil((gap0 + 0.15) * FPS), math.floor((gap1 - 0.15) * FPS) + 1) / FPS
    assert len(times) >= 25
    assert np.mean(class_at(res.timeline, times) == PAUSE) >= 0.95
    assert any(p.symbol == "_" and p.start <= gap0 + 0.15 and p.end >= gap1 - 0.15 for p in res.phonemes)
    first = next(p for p in dub.speech.phonemes if p.start >= gap1 - 1e-6 and p.symbol not in tts.PAUSES)
    mapped = [p for p in res.phonemes if p.symbol == first.symbol and abs(p.start - first.start) < 0.3]
    assert mapped and abs(mapped[0].start - first.start) < 0.04


def test_another_sample_rate_and_stereo_give_the_same_times() -> None:
    from scipy.signal import resample_poly

    dub = Dub(EN, "en+m3", 150, 40, [0.3, 0.0])
    text = " ".join(EN)
    base = align_text(text, "en", dub.samples, dub.sample_rate)
    x48 = resample_poly(dub.samples.astype(np.float64), 320, 147).astype(np.float32)  # 22050 -> 48000
    stereo = align_text(text, "en", np.stack([x48, x48], axis=1), 48000)
    a = np.array([p.start for p in base.phonemes if p.symbol not in tts.PAUSES])
    b = np.array([p.start for p in stereo.phonemes if p.symbol not in tts.PAUSES])
    assert len(a) == len(b) and np.median(np.abs(a - b)) < 0.01


def test_a_wrong_text_is_flagged_with_the_numbers(caplog: pytest.LogCaptureFixture) -> None:
    dub = Dub(EN, "en+f3", 150, 50, [0.4, 0.2])
    right = align_text(" ".join(EN), "en", dub.samples, dub.sample_rate)
    with caplog.at_level(logging.WARNING, logger="rtdub.drive.textalign"):
        wrong = align_text("The small boat moved slowly across the bay while the moon came up.", "en",
                           dub.samples, dub.sample_rate)  # fmt: skip
    assert right.ok and not wrong.ok
    assert right.cost < MAX_COST - 0.1 < MAX_COST < wrong.cost
    assert len(wrong.timeline.starts) == 0 and len(wrong.confident) == 0
    assert any("does not match" in r.getMessage() and f"{wrong.cost:.3f}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("language", "phrases", "other"),
    [
        ("es", ES, "Ayer por la mañana bebimos café amargo en el bar de la plaza mayor."),
        ("de", DE, "Der alte Mann kam morgens mit dem Fahrrad zum Markt, um Brot zu kaufen."),
    ],
)
def test_a_wrong_text_is_flagged_in_other_languages(language: str, phrases: list[str], other: str) -> None:
    dub = Dub(phrases, f"{language}+m2", 170, 45, [0.5, 0.0])
    assert not align_text(other, language, dub.samples, dub.sample_rate).ok


def test_silent_audio_is_not_aligned() -> None:
    res = align_text("Peter bought a map.", "en", np.zeros(16000, np.float32), 16000)
    assert not res.ok and res.cost == math.inf and len(res.timeline.starts) == 0


@pytest.mark.parametrize("language", ["xx", "zz-unknown", "", "en\0"])
def test_an_unknown_language_is_an_input_error(language: str) -> None:
    with pytest.raises(InputError) as info:
        align_text("hello", language, np.zeros(16000, np.float32), 16000)
    assert info.value.path == "--language"
    with pytest.raises(InputError):
        check_language(language)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_text_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError) as info:
        align_text(text, "en", np.zeros(16000, np.float32), 16000)
    assert info.value.path == "--text"


@pytest.mark.parametrize(
    "samples", [np.zeros(0, np.float32), np.zeros((2, 3, 4), np.float32), np.array([0.0, np.nan] * 8000)]
)
def test_bad_samples_are_an_input_error(samples: np.ndarray) -> None:
    with pytest.raises(InputError) as info:
        align_text("hello", "en", samples, 16000)
    assert info.value.path == "--audio"


# --- the DTW itself -----------------------------------------------------------------------


def _brute_force(x: np.ndarray, sx: np.ndarray, y: np.ndarray, sy: np.ndarray) -> float:
    """The same recursion cell by cell."""
    d = np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1))
    px, py = sx[:, None], sy[None]
    c = (1 - px) * (1 - py) * d + (px * (1 - py) + (1 - px) * py) * textalign.MISMATCH_COST
    h = np.where(py > 0.5, np.minimum(c, textalign.PAUSE_STEP), c) + textalign.STEP_PENALTY
    v = np.where(px > 0.5, np.minimum(c, textalign.PAUSE_STEP), c) + textalign.STEP_PENALTY
    n, m = c.shape
    acc = np.full((n, m), np.inf)
    acc[0, 0] = c[0, 0]
    for i in range(n):
        for j in range(m):
            if i and j:
                acc[i, j] = min(acc[i, j], acc[i - 1, j - 1] + 2 * c[i, j])
            if i:
                acc[i, j] = min(acc[i, j], acc[i - 1, j] + v[i, j])
            if j:
                acc[i, j] = min(acc[i, j], acc[i, j - 1] + h[i, j])
    return float(acc[-1, -1])


def _path_total(path: textalign._Path, x: np.ndarray, sx: np.ndarray, y: np.ndarray, sy: np.ndarray) -> float:
    """The objective of a path, step by step."""
    total = 0.0
    for k in range(len(path.ref)):
        i, j = int(path.ref[k]), int(path.dub[k])
        d = float(np.sqrt(((x[i] - y[j]) ** 2).sum()))
        c = (1 - sx[i]) * (1 - sy[j]) * d + (sx[i] * (1 - sy[j]) + (1 - sx[i]) * sy[j]) * textalign.MISMATCH_COST
        if k == 0:
            total += c
        elif path.ref[k] > path.ref[k - 1] and path.dub[k] > path.dub[k - 1]:
            total += 2 * c
        elif path.ref[k] > path.ref[k - 1]:
            total += (min(c, textalign.PAUSE_STEP) if sx[i] > 0.5 else c) + textalign.STEP_PENALTY
        else:
            total += (min(c, textalign.PAUSE_STEP) if sy[j] > 0.5 else c) + textalign.STEP_PENALTY
    return total


@pytest.mark.parametrize("seed", range(6))
def test_dtw_finds_the_cheapest_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(3, 30, 2))
    x, y = rng.normal(size=(n, 4)), rng.normal(size=(m, 4))
    sx, sy = (rng.random(n) < 0.3).astype(np.float64), rng.random(m)
    full = textalign._Band.of(np.zeros(n, np.int64), np.full(n, m, np.int64))
    path = textalign._dtw(x, sx, y, sy, full)
    best = _brute_force(x, sx, y, sy)
    assert path.total == pytest.approx(best, rel=1e-9)
    assert _path_total(path, x, sx, y, sy) == pytest.approx(best, rel=1e-9)
    steps = np.stack([np.diff(path.ref), np.diff(path.dub)], axis=1)
    assert path.ref[0] == 0 and path.dub[0] == 0 and path.ref[-1] == n - 1 and path.dub[-1] == m - 1
    assert set(map(tuple, steps.tolist())) <= {(1, 1), (1, 0), (0, 1)}


def test_coarse_to_fine_finds_the_full_matrix_path() -> None:
    """Two copies of one feature track, one stretched and with a pause: the banded path
    (coarse to fine) costs what the full matrix's does."""
    rng = np.random.default_rng(7)
    x = np.cumsum(rng.normal(size=(400, 6)), axis=0) * 0.1
    idx = np.clip(np.round(np.arange(520) * 400 / 520).astype(int), 0, 399)
    y = x[idx] + rng.normal(scale=0.05, size=(520, 6))
    y = np.concatenate([y[:200], np.zeros((60, 6)), y[200:]])
    sx, sy = np.zeros(400), np.concatenate([np.zeros(200), np.ones(60), np.zeros(320)])
    full = textalign._dtw(x, sx, y, sy, textalign._Band.of(np.zeros(400, np.int64), np.full(400, 580, np.int64)))
    cells = textalign.FULL_CELLS
    try:
        textalign.FULL_CELLS = 10_000  # forces two coarser levels
        banded = textalign._align(x, sx, y, sy)
    finally:
        textalign.FULL_CELLS = cells
    assert banded.total == pytest.approx(full.total, rel=1e-6)


def _covered_share(tl: PhoneTimeline, a: float, b: float) -> float:
    times = np.arange(math.ceil(a * FPS), math.floor(b * FPS) + 1) / FPS
    return float(np.mean(class_at(tl, times) >= 0))


def test_a_replaced_phrase_is_left_to_the_audio() -> None:
    """The dub says another phrase than the text in one place: the text still matches as a
    whole, but the timeline leaves that phrase uncovered (the audio drives it) and covers the
    rest."""
    dub = Dub(EN + EN2, "en+m3", 160, 50, [0.3, 0.2, 0.5, 0.3, 0.2])
    text = " ".join([*EN, "The small boat moved slowly", *EN2[1:]])
    res = align_text(text, "en", dub.samples, dub.sample_rate)
    assert res.ok
    a, b = dub.phrase_spans[3]
    assert _covered_share(res.timeline, a + 0.1, b - 0.1) <= 0.2
    for k in (0, 1, 2, 4, 5):
        assert _covered_share(res.timeline, *dub.phrase_spans[k]) >= 0.8, k


def test_audio_the_text_does_not_reach_is_left_to_the_audio() -> None:
    """The text stops halfway through the audio: nothing after it is covered."""
    dub = Dub(EN + EN2, "en+m3", 160, 50, [0.3, 0.2, 0.5, 0.3, 0.2])
    res = align_text(" ".join(EN), "en", dub.samples, dub.sample_rate)
    assert _covered_share(res.timeline, dub.phrase_spans[3][0], dub.speech.duration) <= 0.1


def test_the_spectrogram_is_rtdubs_computed_in_blocks() -> None:
    from rtdub import audio

    x = np.random.default_rng(3).normal(scale=0.1, size=16000 * 2 + 17).astype(np.float32)
    np.testing.assert_allclose(textalign._melspectrogram(x, block=37), audio.melspectrogram(x), atol=1e-5)


def test_the_band_grows_with_the_length_not_its_square() -> None:
    """Memory: the fine level's band around a coarse path is a few dozen cells per row."""
    n = 4800  # a minute at 80 frames per second
    coarse = textalign._Path(np.arange(n // 4), np.arange(n // 4), np.zeros(n // 4))
    band = textalign._band_around(coarse, 4, n, n, textalign.RADIUS + 4)
    assert band.cells <= n * (4 * (textalign.RADIUS + 4) + 8)
    assert np.all(band.lo[1:] >= band.lo[:-1]) and np.all(band.hi[1:] >= band.hi[:-1])
    assert band.lo[0] == 0 and band.hi[-1] == n
