"""Phone labels for real speech (training/asr_phones.py, training/recogniser.py): pocketsphinx's en-us model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from rtdub import audio, tts  # noqa: E402
from training.asr_phones import main  # noqa: E402
from training.phones import (  # noqa: E402
    PAUSE,
    VISEME_CLASSES,
    PhoneSegment,
    frame_labels,
    load_shards,
    save_shard,
    viseme_class,
)
from training.recogniser import ARPABET, Recogniser, espeak_symbol  # noqa: E402

from .factories import prepared_shard  # noqa: E402


def test_arpabet_phones_take_the_visual_class_of_their_espeak_mnemonic() -> None:
    cls = {name: VISEME_CLASSES[viseme_class(espeak_symbol(a))] for name, a in
           [("p", "P"), ("b", "B1"), ("m", "M"), ("aa", "AA1"), ("ay", "AY"), ("f", "F"), ("w", "W"),
            ("sh", "SH"), ("th", "TH"), ("n", "N"), ("ng", "NG"), ("iy", "IY0"), ("uw", "UW")]}  # fmt: skip
    assert cls["p"] == cls["b"] == cls["m"] == "bilabial"
    assert cls["aa"] == cls["ay"] == "open_vowel"
    assert cls["f"] == "labiodental" and cls["w"] == "lip_round_glide"
    assert cls["sh"] == "sibilant" and cls["th"] == "dental"
    assert cls["n"] == "alveolar" and cls["ng"] == "back"
    assert cls["iy"] == "spread_vowel" and cls["uw"] == "rounded_vowel"
    for noise in ("SIL", "+NSN+", "+SPN+", "<sil>", "[NOISE]"):
        assert espeak_symbol(noise) == PAUSE
    assert len(set(ARPABET.values())) == len(ARPABET)  # no two phones merged


def _labels(segments: list[PhoneSegment], n: int, symbols: dict[str, int]) -> list[str]:
    """Recognised segments as asr_phones labels them: one symbol per mel frame."""
    phone = frame_labels([(s.phone, s.start, s.end) for s in segments], n, symbols)
    names = {i: sym for sym, i in symbols.items()}
    return [names[int(i)] for i in phone]


def test_frame_labels_and_the_shard_load_as_tts_speech(tmp_path: Path) -> None:
    segs = [PhoneSegment("m", 0.10, 0.20), PhoneSegment("a", 0.20, 0.35)]
    labels = _labels(segs, 40, {PAUSE: 0})
    assert labels[:8] == [PAUSE] * 8  # frames 0..7 (0.0..0.0875 s)
    assert labels[8:16] == ["m"] * 8 and labels[16:28] == ["a"] * 12 and labels[28:] == [PAUSE] * 12
    wav = (0.1 * np.sin(np.arange(8000) / 7)).astype(np.float32)
    n = len(audio.melspectrogram(audio.normalize_loudness(wav)))
    symbols = {PAUSE: 0}
    phone = frame_labels([(s.phone, s.start, s.end) for s in segs], n, symbols)
    labels = _labels(segs, n, {PAUSE: 0})
    save_shard(tmp_path / "asr_x.npz", wav, phone, symbols, "asr")
    assert [p.name for p in tmp_path.iterdir()] == ["asr_x.npz"]  # no .part left
    (shard,) = load_shards(tmp_path)
    assert [shard.symbols[i] for i in shard.phone] == labels
    classes = shard.classes()
    assert VISEME_CLASSES[classes[10]] == "bilabial" and VISEME_CLASSES[classes[20]] == "open_vowel"
    assert np.abs(shard.wav - wav).max() < 1e-4


@pytest.fixture(scope="module")
def recogniser() -> Recogniser:
    return Recogniser()


def test_recognised_bilabials_fall_on_the_closures_espeak_made(recogniser: Recogniser) -> None:
    """On espeak speech (far from the natural speech the model knows, so recall is low) the
    /p b m/ it reports are where espeak closed the lips: timing and phone mapping are right."""
    hits = found = on_closure = 0
    for text, voice in [
        ("Bob made my mum a map by the pub, and Pam put the bumper back.", "en"),
        ("Maybe the baby wants more apple pie with maple syrup.", "en-us"),
    ]:
        speech = tts.synthesize(text, voice=voice, rate=140).resampled(audio.SAMPLE_RATE)
        segs, _ = recogniser.phones(speech.samples)
        assert segs and all(0 <= s.start < s.end <= speech.duration + 0.05 for s in segs)
        closures = [(a, b) for _, a, b in tts.lip_closures(speech)]
        bilabial = [s for s in segs if s.phone in ("p", "b", "m")]
        found += len(bilabial)
        on_closure += sum(any(s.start < b + 0.05 and s.end > a - 0.05 for a, b in closures) for s in bilabial)
        hits += sum(any(s.start < b + 0.05 and s.end > a - 0.05 for s in bilabial) for a, b in closures)
    assert found >= 4 and on_closure >= 0.75 * found, (found, on_closure)
    assert hits >= 4, hits


def test_cli_labels_prepared_clips_resumably_and_keeps_the_holdout_out(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "asr"
    data.mkdir()
    prepared_shard(data / "real_a.npz", 3.0, seed=1)
    prepared_shard(data / "real_held.npz", 3.0, seed=2)
    assert main(["--data", str(data), "--out", str(out), "--holdout", "*held*"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["asr.json", "asr_real_a.npz"]
    summary = json.loads((out / "asr.json").read_text())
    assert summary["asr_real_a.npz"]["clip"] == "real_a"
    (shard,) = load_shards(out)
    assert len(shard.phone) == len(shard.mel)
    mtime = (out / "asr_real_a.npz").stat().st_mtime_ns
    assert main(["--data", str(data), "--out", str(out), "--holdout", "*held*"]) == 0
    assert (out / "asr_real_a.npz").stat().st_mtime_ns == mtime
    assert json.loads((out / "asr.json").read_text()) == summary  # the earlier run's entry is kept
    assert main(["--data", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_pretraining_takes_tts_and_recognised_shards_together(tmp_path: Path) -> None:
    """pretrain_a2l --tts A --tts B: one phone vocabulary over both directories, the last shard
    of the first held out (its accuracy is logged at the checkpoint)."""
    pytest.importorskip("torch")
    from training.pretrain_a2l import main as pretrain

    rng = np.random.default_rng(0)
    for folder, names, phones in (("tts", ["tts_0000", "tts_0001"], ["a", "m", "s"]), ("asr", ["asr_x"], ["O:", "b"])):
        (tmp_path / folder).mkdir()
        for name in names:
            wav = (0.1 * rng.standard_normal(16000)).astype(np.float32)
            n = len(audio.melspectrogram(audio.normalize_loudness(wav)))
            spans = [(phones[k % len(phones)], k * 0.1, (k + 1) * 0.1) for k in range(int(n / audio.MEL_FPS / 0.1))]
            symbols = {PAUSE: 0}
            save_shard(tmp_path / folder / f"{name}.npz", wav, frame_labels(spans, n, symbols), symbols, "test")
    out = tmp_path / "pre"
    argv = ["--task", "phones", "--tts", str(tmp_path / "tts"), "--tts", str(tmp_path / "asr"), "--out", str(out)]
    assert pretrain([*argv, "--steps", "2", "--batch", "4", "--save-every", "2"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert {"O:", "b", "a", "m", "s"} <= set(meta["vocab"]) and meta["step"] == 2
    assert set(meta["eval"]) == {"val_loss", "val_class_acc", "val_phone_acc"}
    assert pretrain(["--task", "phones", "--tts", str(tmp_path / "asr"), "--out", str(tmp_path / "p2")]) == 2
