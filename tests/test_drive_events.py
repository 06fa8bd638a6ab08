"""Timed phoneme and viseme files become one timeline of visual classes: each format is read
(Polly speech marks, Azure viseme events, rtdub's IPA JSON, espeak's own events), detected
without being named, and every malformed file gets an InputError that names it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtdub import tts
from rtdub.drive.events import LAST_MARK_S, from_speech, load_phonemes, parse_phonemes, timeline
from rtdub.drive.phones import (
    BILABIAL,
    LABIODENTAL,
    OPEN,
    OTHER,
    PAUSE,
    ROUNDED,
    SIBILANT,
    arpabet_class,
    azure_class,
    espeak_class,
    ipa_class,
    polly_class,
)
from rtdub.exceptions import InputError

POLLY = "\n".join(
    json.dumps(m)
    for m in [
        {"time": 0, "type": "sentence", "start": 0, "end": 9, "value": "Mama"},
        {"time": 6, "type": "word", "start": 0, "end": 4, "value": "Mama"},
        {"time": 6, "type": "viseme", "value": "p"},
        {"time": 120, "type": "viseme", "value": "a"},
        {"time": 250, "type": "viseme", "value": "p"},
        {"time": 330, "type": "viseme", "value": "a"},
        {"time": 480, "type": "viseme", "value": "sil"},
    ]
)


def test_polly_speech_marks() -> None:
    tl = parse_phonemes(POLLY)
    assert tl.source == "polly" and tl.mapped == 0
    assert tl.classes.tolist() == [BILABIAL, OPEN, BILABIAL, OPEN, PAUSE]
    np.testing.assert_allclose(tl.starts, [0.006, 0.12, 0.25, 0.33, 0.48])
    np.testing.assert_allclose(tl.ends, [0.12, 0.25, 0.33, 0.48, 0.48 + LAST_MARK_S])


def test_azure_viseme_events() -> None:
    events = [{"audioOffset": 500_000, "visemeId": 21}, {"AudioOffset": 1_500_000, "VisemeId": 2}]
    tl = parse_phonemes(json.dumps(events))
    assert tl.source == "azure"
    assert tl.classes.tolist() == [BILABIAL, OPEN]
    np.testing.assert_allclose(tl.starts, [0.05, 0.15])


def test_rtdub_ipa_json_and_unknown_symbols() -> None:
    events = [
        {"start": 0.0, "end": 0.1, "phoneme": "m"},
        {"start": 0.1, "end": 0.25, "phoneme": "ˈaː"},
        {"start": 0.25, "end": 0.3, "phoneme": "tʃ"},
        {"start": 0.3, "end": 0.4, "phoneme": "☃"},
        {"start": 0.45, "end": 0.5, "phoneme": "f"},
    ]
    tl = parse_phonemes(json.dumps(events))
    assert tl.source == "rtdub"
    assert tl.classes.tolist() == [BILABIAL, OPEN, SIBILANT, OTHER, LABIODENTAL]
    assert tl.mapped == 1
    assert not tl.covered(0.35, 0.47)  # the gap 0.4-0.45 has no event
    assert tl.covered(0.0, 0.4)


def test_class_tables() -> None:
    assert espeak_class("m") == ipa_class("m") == arpabet_class("M") == polly_class("p") == azure_class(21) == BILABIAL
    assert ipa_class("oʊ") == arpabet_class("OW1") == polly_class("o") == azure_class(8) == ROUNDED
    assert ipa_class("dʒ") == arpabet_class("jh") == polly_class("S") == azure_class(16) == SIBILANT
    assert polly_class("x") is None and azure_class(22) is None and arpabet_class("Q") is None
    assert ipa_class("sil") == PAUSE and ipa_class("☃") is None


def test_occupancy_shares_sum_to_one() -> None:
    tl = timeline([(0.0, 0.05, BILABIAL), (0.05, 0.2, OPEN)])
    occ = tl.occupancy(-0.02, 0.04, 8)
    np.testing.assert_allclose(occ.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(occ[0, [PAUSE, BILABIAL]], [0.5, 0.5])
    np.testing.assert_allclose(occ[1, [BILABIAL, OPEN]], [0.75, 0.25])
    assert occ[7, PAUSE] == 1.0  # past the last event


def test_espeak_events_make_a_timeline() -> None:
    speech = tts.synthesize("mama papa", "en")
    tl = from_speech(speech)
    assert tl.source == "espeak" and BILABIAL in tl.classes and OPEN in tl.classes
    assert tl.span[1] <= speech.duration + 1e-6


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file"),
        ('{"time": 1, "type": "viseme", "value": "p"}\nnot json', "line 2: not JSON"),
        ('[{"foo": 1}]', "unknown format"),
        ("[1, 2]", "unknown format"),
        ('{"time": 1, "type": "word", "value": "hi"}', "no viseme marks"),
        (
            '{"time": 300, "type": "viseme", "value": "p"}\n{"time": 100, "type": "viseme", "value": "a"}',
            "out of order",
        ),
        ('[{"start": 0.5, "end": 0.2, "phoneme": "a"}]', "before it starts"),
        ('[{"start": 0.5, "end": 0.9, "phoneme": "a"}, {"start": 0.1, "end": 0.2, "phoneme": "m"}]', "out of order"),
        ('[{"audioOffset": 10, "visemeId": 40}]', "outside Azure"),
        ('[{"audioOffset": -5, "visemeId": 1}]', "number >= 0"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_malformed_files_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        parse_phonemes(text, "marks.json")
    assert err.value.path == "marks.json" and problem in err.value.problem


def test_events_must_overlap_the_audio(tmp_path: Path) -> None:
    f = tmp_path / "late.json"
    f.write_text(json.dumps([{"start": 12.0, "end": 12.5, "phoneme": "a"}]))
    with pytest.raises(InputError, match="do not overlap the audio"):
        load_phonemes(f, audio_duration=5.0)
    f.write_text(json.dumps([{"start": 4.0, "end": 6.0, "phoneme": "a"}]))
    assert load_phonemes(f, audio_duration=5.0).span == (4.0, 5.0)
    with pytest.raises(InputError, match="no such file"):
        load_phonemes(tmp_path / "missing.json")
