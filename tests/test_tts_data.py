"""TTS training labels: the silent closure of a /p/ (before espeak's phoneme event, which
marks the release) is labelled bilabial, as the lips are shut there."""

from __future__ import annotations

import numpy as np

from rtdub import audio, tts
from training.phones import frame_labels, viseme_class
from training.tts_data import speech_spans


def _classes(spans: list[tuple[str, float, float]], n: int) -> np.ndarray:
    symbols: dict[str, int] = {"_": 0}
    lab = frame_labels(spans, n, symbols)
    table = np.array([viseme_class(s) for s in sorted(symbols, key=symbols.__getitem__)])
    return table[lab]


def test_a_stops_closure_is_labelled_bilabial() -> None:
    sp = tts.synthesize("a happy puppy", voice="en").resampled(audio.SAMPLE_RATE)
    t0 = 0.5
    n = int((t0 + sp.duration) * audio.MEL_FPS)
    times = np.arange(n) / audio.MEL_FPS
    labelled = _classes(speech_spans(sp, t0), n)
    plain = _classes([(p.symbol, t0 + p.start, t0 + p.end) for p in sp.phonemes], n)
    stops = [(p, a) for p, a, _ in tts.lip_closures(sp) if p.symbol == "p"]
    assert len(stops) == 3
    for p, a in stops:
        assert p.start - a >= 0.02  # a quiet closure was found before the release
        inside = (times >= t0 + a + 0.005) & (times < t0 + p.start - 0.005)
        assert inside.any() and (labelled[inside] == 1).all()
        assert (plain[inside] != 1).all()  # the phoneme spans alone call it something else
