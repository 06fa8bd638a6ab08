"""``rtdub dub --phonemes`` and its usage errors: a Polly speech-mark file of the dubbed TTS
moves the lips (frames past the marks take the audio drive and are counted); malformed,
out-of-order or non-overlapping files and contradictory flags are one-line errors, exit 2,
with no output written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtdub import tts
from rtdub.drive.events import from_speech
from rtdub.drive.phones import VISEME_CLASSES

from .factories import talking_clip, write_wav
from .test_cli import assert_one_line_error, run_cli

# our class -> a Polly viseme of that class (for writing marks from espeak's events)
POLLY_OF = {"pause": "sil", "bilabial": "p", "labiodental": "f", "lip_round_glide": "u", "open_vowel": "a",
            "rounded_vowel": "o", "spread_vowel": "i", "central_vowel": "@", "dental": "T", "alveolar": "t",
            "sibilant": "s", "back": "k", "other": "@"}  # fmt: skip


@pytest.fixture(scope="module")
def tts_dub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 2 s clip, 1.6 s of espeak speech as the dubbed audio, and its Polly viseme marks
    (covering the first 1.2 s only)."""
    d = tmp_path_factory.mktemp("phon")
    speech = tts.synthesize("Bob made a map for mama.", "en").resampled(16000)
    wav = write_wav(d / "dub.wav", speech.samples)
    clip = talking_clip(d / "clip.mp4", 2.0, 25, None)
    tl = from_speech(speech)
    marks = [
        json.dumps({"time": int(round(s * 1000)), "type": "viseme", "value": POLLY_OF[VISEME_CLASSES[int(c)]]})
        for s, c in zip(tl.starts, tl.classes, strict=True)
        if s < 1.2
    ]
    f = d / "marks.json"
    f.write_text("\n".join([json.dumps({"time": 0, "type": "sentence", "value": "Bob"}), *marks]) + "\n")
    return clip, wav, f


def test_dub_with_polly_marks(tmp_path: Path, tts_dub: tuple[Path, Path, Path]) -> None:
    clip, wav, marks = tts_dub
    out = tmp_path / "o.mp4"
    res = run_cli("dub", "-q", "--video", str(clip), "--audio", str(wav), "--phonemes", str(marks), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file()
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("lips:"))
    fallback = int(line.rsplit(" ", 1)[1])
    assert "from the phonemes" in line
    assert 3 <= fallback < 40  # the marks stop at 1.2 s of the 1.6 s speech


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json at all", "not JSON"),
        ('{"time": 500, "type": "viseme", "value": "p"}\n{"time": 9, "type": "viseme", "value": "a"}', "out of order"),
        ('[{"start": 30.0, "end": 31.0, "phoneme": "a"}]', "do not overlap the audio"),
        ('[{"what": 1}]', "unknown format"),
    ],
)
def test_bad_phoneme_files(tmp_path: Path, tts_dub: tuple[Path, Path, Path], content: str, words: str) -> None:
    clip, wav, _ = tts_dub
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = tmp_path / "o.mp4"
    res = run_cli("dub", "--video", str(clip), "--audio", str(wav), "--phonemes", str(bad), "-o", str(out))
    assert_one_line_error(res, bad, words)
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--text", "hola", "--language", "es", "--phonemes", "PH"], "--phonemes"),
        (["--text", "hola"], "--language"),
        (["--language", "es"], "--language"),
        (["--text", "  ", "--language", "es"], "--text"),
    ],
)
def test_contradictory_drive_flags(
    tmp_path: Path, tts_dub: tuple[Path, Path, Path], extra: list[str], flag: str
) -> None:
    clip, wav, marks = tts_dub
    out = tmp_path / "o.mp4"
    args = [str(marks) if a == "PH" else a for a in extra]
    res = run_cli("dub", "--video", str(clip), "--audio", str(wav), "-o", str(out), *args)
    assert_one_line_error(res, Path(flag), "")
    assert not out.exists()




def test_dub_with_text_and_language(tmp_path: Path, tts_dub: tuple[Path, Path, Path]) -> None:
    """The text of the dubbed speech, aligned to it: the lips follow its phonemes; a text that
    is not what the audio says is reported and the audio drives the lips."""
    clip, wav, _ = tts_dub
    out = tmp_path / "o.mp4"
    args = ["dub", "-q", "--video", str(clip), "--audio", str(wav), "-o", str(out), "--language", "en"]
    res = run_cli(*args, "--text", "Bob made a map for mama.")
    assert res.returncode == 0, res.stderr
    assert any(ln.startswith("lips: from the text") for ln in res.stdout.splitlines()), res.stdout
    wrong = run_cli(*args, "--text", "Seven lazy zebras sit quietly in the fog near Oslo today.")
    assert wrong.returncode == 0, wrong.stderr
    assert any(ln.startswith("lips: from the audio") for ln in wrong.stdout.splitlines()), wrong.stdout
