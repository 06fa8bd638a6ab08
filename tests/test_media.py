"""Media I/O: resampling, atomic writes, ping-pong looping over a short video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtdub import media
from rtdub.dub import LoopedFrames
from rtdub.exceptions import InputError

from .factories import speechlike, stereo_aac


def numbered_clip(path: Path, n: int, fps: float = 25) -> Path:
    """Frames whose mean brightness encodes their index (robust to the codec)."""
    frames = [np.full((64, 64, 3), 20 + 8 * i, np.uint8) for i in range(n)]
    from rtdub import samples

    return samples.write_clip(path, frames, fps)


def frame_index(img: np.ndarray) -> int:
    return int(round((float(img.mean()) - 20) / 8))


def test_audio_is_resampled_to_16k_mono(tmp_path: Path) -> None:
    src = np.stack([speechlike(1.5), speechlike(1.5, seed=2)])
    f = stereo_aac(tmp_path / "a.m4a", src, 48000)
    assert media.audio_sample_rate(f) == 48000
    mono = media.load_audio(f)
    assert mono.ndim == 1 and abs(mono.size - 1.5 * 16000) < 2048  # AAC priming/padding
    stereo = media.load_audio(f, sample_rate=48000, mono=False)
    assert stereo.shape[0] == 2 and abs(stereo.shape[1] - 1.5 * 48000) < 4096


def test_writer_is_atomic_on_error(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    with pytest.raises(KeyboardInterrupt):
        with media.VideoWriter(out, 25, 64, 64) as w:
            for _ in range(10):
                w.write(np.zeros((64, 64, 3), np.uint8))
            raise KeyboardInterrupt
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    with media.VideoWriter(out, 25, 64, 64) as w:
        w.write(np.zeros((64, 64, 3), np.uint8))
    assert out.exists() and list(tmp_path.iterdir()) == [out]


def test_odd_frame_size_is_cropped_to_even(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    with media.VideoWriter(out, 25, 65, 63) as w:
        w.write(np.zeros((63, 65, 3), np.uint8))
    info = media.probe_video(out)
    assert (info.width, info.height) == (64, 62)


def test_ping_pong_loop(tmp_path: Path) -> None:
    clip = numbered_clip(tmp_path / "n.mp4", 10)
    lf = LoopedFrames(clip, spool=True)
    try:
        got = [frame_index(lf.at(i / 25)) for i in range(40)]
    finally:
        lf.close()
    # forward 0..9, then back from the end, then forward again: never a jump
    assert got[:10] == list(range(10))
    assert got[10:19] == [8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert got[19:28] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert max(abs(a - b) for a, b in zip(got, got[1:], strict=False)) <= 1


def test_frames_follow_presentation_time(tmp_path: Path) -> None:
    clip = numbered_clip(tmp_path / "n.mp4", 10)
    lf = LoopedFrames(clip, spool=False)
    try:
        # sampling a 25 fps video at 12.5 fps skips every other frame
        got = [frame_index(lf.at(i / 12.5)) for i in range(5)]
    finally:
        lf.close()
    assert got == [0, 2, 4, 6, 8]


def test_not_a_media_file(tmp_path: Path) -> None:
    junk = tmp_path / "x.wav"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="not a readable media file|no audio stream"):
        media.load_audio(junk)
