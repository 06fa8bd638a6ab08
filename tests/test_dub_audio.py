"""The dub reads its audio a piece at a time: the mel (FileMel) and the muxed track are the
ones the whole track gives, and the held mel stays bounded at any length (issue 17 item 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtdub import audio, media
from rtdub.dub import FileMel

from .factories import speechlike, stereo_aac, write_wav


def whole_mel(path: Path) -> np.ndarray:
    return audio.melspectrogram(audio.normalize_loudness(media.load_audio(path)))


def test_file_mel_is_the_whole_tracks(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", speechlike(3.3, seed=4))
    whole = whole_mel(wav)
    mel = FileMel(wav)
    got = np.concatenate([mel.frames(k - 20, k) for k in range(0, len(whole) + 40, 20)])
    mel.close()
    expect = audio.StaticMel(whole)
    np.testing.assert_allclose(
        got, np.concatenate([expect.frames(k - 20, k) for k in range(0, len(whole) + 40, 20)]), atol=1e-4
    )


def test_file_mel_resamples_and_holds_a_bounded_window(tmp_path: Path) -> None:
    src = np.stack([speechlike(4.0), speechlike(4.0, seed=2)])
    f = stereo_aac(tmp_path / "a.m4a", src, 44100)
    whole = whole_mel(f)
    mel = FileMel(f, keep_frames=50)
    for k in range(10, len(whole) + 10, 7):  # forward, as the frames ask
        np.testing.assert_allclose(mel.frames(k - 10, k), audio.StaticMel(whole).frames(k - 10, k), atol=1e-4)
        assert len(mel._mel._mel) <= 50
    assert mel.n_frames == len(whole)
    mel.close()
