"""What bounds a dub's memory (issue 17 item 6): the audio read a piece at a time (the mel,
FileMel, and the muxed track are the ones the whole track gives; the held mel stays bounded at
any length), and codec threads capped by the frame's area rather than set by the cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtdub import audio, media
from rtdub.dub import THREADS_1080P, FileMel, codec_threads

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


@pytest.mark.parametrize(("cpus", "size", "expect"), [
    (2, (3840, 2160), (3, 3)),  # FFmpeg's and x264's own counts where they are smaller
    (2, (1920, 1080), (3, 3)),
    (16, (1920, 1080), (THREADS_1080P, THREADS_1080P)),
    (16, (3840, 2160), (3, 3)),  # a 16-core machine's own counts (16, 24) peaked at 1252 MB at 4K
    (16, (640, 360), (16, 24)),
    (64, (640, 360), (16, 96)),
])  # fmt: skip
def test_codec_threads_are_capped_by_the_frame_area(
    monkeypatch: pytest.MonkeyPatch, cpus: int, size: tuple[int, int], expect: tuple[int, int]
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert codec_threads(*size) == expect


def test_codecs_take_the_thread_counts(tmp_path: Path) -> None:
    import av

    out = tmp_path / "o.mp4"
    with media.VideoWriter(out, 25, 320, 240, threads=2) as w:  # x264 allows 2 at this height
        for i in range(10):
            w.write(np.full((240, 320, 3), 20 * i, np.uint8))
    with media.FrameReader(out, threads=2) as r:
        assert r._c.streams.video[0].codec_context.thread_count == 2
        assert len(list(r.frames())) == 10
    with av.open(str(out)) as c:  # x264 writes its settings into the stream
        data = b"".join(bytes(p) for p in c.demux(c.streams.video[0]) if p.size)
    assert b"threads=2 " in data
