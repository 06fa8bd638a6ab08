"""No silent wrong results: ``rtdub dub`` says when several faces are in the frame and dubs
the one ``--face`` names; ``rtdub eval`` warns when the audio and the video lengths differ."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rtdub import media
from rtdub.cli.main import main
from rtdub.measure import samples
from rtdub.measure.avsync import SyncNetExpert
from rtdub.measure.scoring import evaluate_files

from .factories import speechlike, write_wav
from .test_tracker import two_faces


@pytest.fixture(scope="module")
def two_face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s at 25 fps of the two faces (the big one on the left) under gentle head motion."""
    frames = list(samples.head_motion(two_faces(), 25, 25.0, amplitude=0.3))
    return samples.write_clip(tmp_path_factory.mktemp("faces") / "two.mp4", frames, 25)


def changed_mouth_pixels(src: Path, out: Path) -> tuple[int, int]:
    """Pixels (summed over the frames) that the dub changed by more than 30 levels in the left
    and in the right half: codec noise stays well under that, a re-rendered mouth does not."""
    left = right = 0
    for a, b in zip(media.iter_frames(src), media.iter_frames(out), strict=True):
        big = np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).max(-1) > 30
        left += int(big[:, :512].sum())
        right += int(big[:, 512:].sum())
    return left, right


@pytest.mark.parametrize(("face", "dubbed"), [(None, "left"), ("1", "right")])
def test_several_faces_are_reported_and_the_chosen_one_is_dubbed(
    tmp_path: Path,
    two_face_clip: Path,
    face: str | None,
    dubbed: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    audio = write_wav(tmp_path / "a.wav", speechlike(1.0, seed=2))
    out = tmp_path / "o.mp4"
    args = ["dub", "--video", str(two_face_clip), "--audio", str(audio), "-o", str(out), "-q"]
    with caplog.at_level(logging.WARNING, logger="rtdub.dub"):
        assert main(args + (["--face", face] if face is not None else [])) == 0
    text = capsys.readouterr().out
    assert "frames with more than one face: 25," in text
    chosen = "largest face" if face is None else "face number 1 from the left"
    assert f"with several faces (up to 2) the {chosen}" in text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("25 of 25 frames show more than one face (up to 2)")
    left, right = changed_mouth_pixels(two_face_clip, out)
    assert (left > 20 * max(right, 1)) if dubbed == "left" else (right > 20 * max(left, 1)), (left, right)


def test_one_face_reports_none(tmp_path: Path, talking_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = write_wav(tmp_path / "a.wav", speechlike(1.0, seed=2))
    out = tmp_path / "o.mp4"
    assert main(["dub", "--video", str(talking_clip), "--audio", str(audio), "-o", str(out), "-q"]) == 0
    assert "frames with more than one face: 0," in capsys.readouterr().out


def test_bad_face_choice_is_a_usage_error(
    tmp_path: Path, talking_clip: Path, dubbed_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["dub", "--video", str(talking_clip), "--audio", str(dubbed_wav), "-o", str(tmp_path / "o.mp4")]
    assert main([*args, "--face", "left"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtdub: error: --face: must be largest, center") and "\n" not in err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(("seconds", "warned"), [(0.1, True), (2.5, False)])
def test_eval_warns_when_audio_and_video_lengths_differ(
    tmp_path: Path, talking_clip: Path, seconds: float, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The 2 s clip scored against 0.1 s of audio (1.9 s apart) and against 2.5 s (0.5 s)."""
    audio = write_wav(tmp_path / "a.wav", speechlike(seconds, seed=6))
    with caplog.at_level(logging.WARNING, logger="rtdub.measure.scoring"):
        rep = evaluate_files(talking_clip, audio, None, SyncNetExpert(threads=1))
    assert rep.audio_seconds == pytest.approx(seconds, abs=0.01)
    assert rep.video_seconds == pytest.approx(2.0, abs=0.01)
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warned:
        assert msgs == [
            f"{audio} lasts 0.10 s but {talking_clip} lasts 2.00 s (1.90 s apart): the scores mean "
            "something only over the first 0.10 s"
        ]
    else:
        assert msgs == []
