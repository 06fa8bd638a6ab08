"""The ``rtdub dub`` command: bad input gives one line and exit 2 with no output; a generated
clip is dubbed end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtdub import media
from rtdub.cli.main import main

from .factories import faceless_clip, speechlike, stereo_aac, talking_clip, vfr_clip, write_wav


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtdub", *args], capture_output=True, text=True, timeout=300, check=False
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], path: Path, words: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("rtdub: error: ")
    assert str(path) in lines[0] and words in lines[0]


@pytest.fixture(scope="module")
def audio_only(media_dir: Path) -> Path:
    return write_wav(media_dir / "only_audio.wav", speechlike(1.0))


@pytest.fixture(scope="module")
def video_only(media_dir: Path) -> Path:
    return talking_clip(media_dir / "video_only.mp4", seconds=1.0, audio=None)


def test_missing_file(tmp_path: Path, dubbed_wav: Path) -> None:
    out = tmp_path / "o.mp4"
    missing = tmp_path / "nope.mp4"
    res = run_cli("dub", "--video", str(missing), "--audio", str(dubbed_wav), "-o", str(out))
    assert_one_line_error(res, missing, "no such file")
    assert not out.exists()


def test_unreadable_file(tmp_path: Path, dubbed_wav: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    out = tmp_path / "o.mp4"
    res = run_cli("dub", "--video", str(junk), "--audio", str(dubbed_wav), "-o", str(out))
    assert_one_line_error(res, junk, "not a readable media file")
    assert not out.exists()


def test_container_without_video(tmp_path: Path, audio_only: Path, dubbed_wav: Path) -> None:
    out = tmp_path / "o.mp4"
    res = run_cli("dub", "--video", str(audio_only), "--audio", str(dubbed_wav), "-o", str(out))
    assert_one_line_error(res, audio_only, "no video stream")
    assert not out.exists()


def test_audio_file_without_audio(tmp_path: Path, talking_clip: Path, video_only: Path) -> None:
    out = tmp_path / "o.mp4"
    res = run_cli("dub", "--video", str(talking_clip), "--audio", str(video_only), "-o", str(out))
    assert_one_line_error(res, video_only, "no audio stream")
    assert not out.exists()


def test_video_without_any_face(tmp_path: Path, media_dir: Path, dubbed_wav: Path) -> None:
    clip = faceless_clip(media_dir / "noface.mp4")
    out = tmp_path / "o.mp4"
    res = run_cli("dub", "--video", str(clip), "--audio", str(dubbed_wav), "-o", str(out))
    assert_one_line_error(res, clip, "no face")
    assert not out.exists()
    assert not list(tmp_path.glob(".*part*"))  # no temporary file left behind


def test_dub_end_to_end(
    tmp_path: Path, talking_clip: Path, dubbed_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dubbed.mp4"
    cmp = tmp_path / "cmp.mp4"
    args = ["--video", str(talking_clip), "--audio", str(dubbed_wav), "-o", str(out)]
    code = main(["dub", *args, "--compare", str(cmp), "--check-locality", "-q"])
    assert code == 0
    text = capsys.readouterr().out
    assert "pixels changed outside the blend mask: 0" in text
    assert "frames without a face (copied unchanged): 0" in text
    # the output follows the dubbed audio (3 s) although the video lasts 2 s: ping-pong
    info = media.probe_video(out)
    assert info.fps == 25
    n = sum(1 for _ in media.iter_frames(out))
    assert n == 75
    dub = media.load_audio(out)
    assert abs(dub.size / 16000 - 3.0) < 0.1
    # the dubbed audio, not the source's, is in the output
    src = media.load_audio(dubbed_wav)
    k = min(src.size, dub.size) - 4000
    c = np.corrcoef(src[2000:k], dub[2000:k])[0, 1]
    assert c > 0.9
    assert media.probe_video(cmp).width == 2 * media.probe_video(talking_clip).width


def test_dub_keeps_frames_outside_the_face(tmp_path: Path, talking_clip: Path, dubbed_wav: Path) -> None:
    """Decode the output and check the top of the frame (far from the mouth) is the input's."""
    out = tmp_path / "o.mp4"
    assert main(["dub", "--video", str(talking_clip), "--audio", str(dubbed_wav), "-o", str(out), "-q"]) == 0
    a = next(media.iter_frames(talking_clip)).image.astype(int)
    b = next(media.iter_frames(out)).image.astype(int)
    top = slice(0, 60)
    assert np.abs(a[top] - b[top]).mean() < 3  # only codec noise
    mouth = (slice(150, 200), slice(190, 270))
    assert a.shape == b.shape and np.abs(a[mouth] - b[mouth]).mean() >= 0


def test_variable_frame_rate_and_odd_audio_rate(tmp_path: Path) -> None:
    """VFR video (frames 30 ms and 50 ms apart) and 44.1 kHz stereo AAC are accepted."""
    src = vfr_clip(tmp_path / "vfr.mkv", n_frames=30)
    aud = stereo_aac(tmp_path / "st.m4a", np.stack([speechlike(1.0), speechlike(1.0, seed=7)]), 44100)
    assert media.audio_sample_rate(aud) == 44100
    out = tmp_path / "o.mp4"
    assert main(["dub", "--video", str(src), "--audio", str(aud), "-o", str(out), "-q"]) == 0
    info = media.probe_video(out)
    n = sum(1 for _ in media.iter_frames(out))
    assert abs(n / float(info.fps) - 1.0) < 0.1  # the output lasts as long as the audio


@pytest.mark.parametrize("bundle", ["hq", "fast"])
def test_dub_with_the_other_shipped_bundles(
    tmp_path: Path, talking_clip: Path, dubbed_wav: Path, capsys: pytest.CaptureFixture[str], bundle: str
) -> None:
    """engines/hq (the wide generator, offline) and engines/fast (the base-16 generator, for
    loaded hosts) are complete bundles: each loads, dubs only inside the mask, and renders a
    different mouth from the default bundle on the same input."""
    from rtdub.model import DEFAULT_MODEL_DIR, load_bundle

    other = DEFAULT_MODEL_DIR.parent / bundle
    assert load_bundle(other).n_units == load_bundle().n_units
    assert load_bundle(other).info["name"] == f"rtdub-{bundle}"
    outs = []
    for name, model in ((bundle, other), ("default", DEFAULT_MODEL_DIR)):
        out = tmp_path / f"{name}.mp4"
        args = ["--video", str(talking_clip), "--audio", str(dubbed_wav), "-o", str(out), "--model", str(model)]
        assert main(["dub", *args, "--check-locality", "-q"]) == 0
        assert "pixels changed outside the blend mask: 0" in capsys.readouterr().out
        outs.append(np.stack([f.image for f in media.iter_frames(out)]).astype(np.int16))
    assert outs[0].shape == outs[1].shape
    assert np.abs(outs[0] - outs[1]).mean() > 0.05  # another generator, another mouth
