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
    from rtdub.measure import samples

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


def _offset_clip(path: Path, video_start: float, audio_start: float, burst_at: float) -> Path:
    """1.6 s of grey video and of silent 16 kHz AAC with a 1 kHz burst ``burst_at`` s into the
    audio stream; each stream's first timestamp is set as given (an edit list in effect)."""
    from fractions import Fraction

    import av

    sr, fps = 16000, 25
    t = np.arange(int(1.6 * sr)) / sr
    wav = np.where((t >= burst_at) & (t < burst_at + 0.1), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = Fraction(1, fps)
        aus = c.add_stream("aac", rate=sr, layout="mono")
        aus.codec_context.time_base = Fraction(1, sr)
        for i in range(int(1.6 * fps)):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24")
            f.pts, f.time_base = i + round(video_start * fps), Fraction(1, fps)
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
        for k in range(0, len(wav) - 1024 + 1, 1024):
            a = av.AudioFrame.from_ndarray(wav[None, k : k + 1024].astype(np.float32), format="fltp", layout="mono")
            a.sample_rate, a.pts, a.time_base = sr, k + round(audio_start * sr), Fraction(1, sr)
            c.mux(aus.encode(a))
        c.mux(aus.encode(None))
    return path


def _burst_onset(wav: np.ndarray, sr: int = 16000) -> float:
    env = np.convolve(np.abs(wav), np.ones(160) / 160, mode="same")
    return float(np.argmax(env > 0.15) / sr)


@pytest.mark.parametrize(("video_start", "audio_start"), [(0.0, 0.4), (0.4, 0.0), (0.0, 0.0)])
def test_audio_is_placed_on_the_video_timeline(tmp_path: Path, video_start: float, audio_start: float) -> None:
    path = _offset_clip(tmp_path / "c.mp4", video_start, audio_start, burst_at=0.6)
    frames = list(media.iter_frames(path))
    assert frames[0].time == 0.0  # the timeline starts at the first frame
    wav = media.load_audio(path)
    # the burst plays 0.6 s after the audio stream starts: that is audio_start + 0.6 on the
    # container's clock, so (audio_start + 0.6 - video_start) s after the first frame
    expected = audio_start + 0.6 - video_start
    assert abs(_burst_onset(wav) - expected) < 0.012, (_burst_onset(wav), expected)
    stereo = media.load_audio(path, mono=False)
    assert stereo.shape[1] == wav.shape[0]


def test_audio_that_ends_before_the_video_starts_is_an_input_error(tmp_path: Path) -> None:
    path = _offset_clip(tmp_path / "c.mp4", video_start=3.0, audio_start=0.0, burst_at=0.6)
    with pytest.raises(InputError, match="ends before the video starts"):
        media.load_audio(path)


@pytest.mark.parametrize(("video_start", "audio_start"), [(0.0, 0.4), (0.4, 0.0)])
def test_audio_chunks_are_load_audios_samples(tmp_path: Path, video_start: float, audio_start: float) -> None:
    """audio_chunks gives load_audio's samples a piece at a time (the lead placed alike), and
    audio_length counts them without holding them."""
    path = _offset_clip(tmp_path / "c.mp4", video_start, audio_start, burst_at=0.6)
    for mono in (True, False):
        pieces = list(media.audio_chunks(path, mono=mono))
        assert len(pieces) > 1 and all(p.ndim == 2 and p.shape[1] > 0 for p in pieces)
        whole = media.load_audio(path, mono=mono)
        np.testing.assert_array_equal(np.concatenate(pieces, axis=1), np.atleast_2d(whole))
    assert media.audio_length(path) == media.load_audio(path).size
    late = _offset_clip(tmp_path / "late.mp4", video_start=3.0, audio_start=0.0, burst_at=0.6)
    with pytest.raises(InputError, match="ends before the video starts"):
        media.audio_length(late)


def test_writer_takes_the_audio_in_pieces(tmp_path: Path) -> None:
    """Audio given as pieces (a long track read as the video reaches it) is muxed as the
    same audio given whole: the same packets."""
    import av

    src = np.stack([speechlike(1.3), speechlike(1.3, seed=2)]) * 1.5  # some samples clip
    sizes = np.cumsum([700, 1024, 3, 5000, 1])

    def write(out: Path, audio: object) -> list[bytes]:
        with media.VideoWriter(out, 25, 64, 64, audio, 16000) as w:  # type: ignore[arg-type]
            for _ in range(30):  # the audio outlasts the video: the rest is written at close
                w.write(np.zeros((64, 64, 3), np.uint8))
        with av.open(str(out)) as c:
            return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]

    whole = write(tmp_path / "whole.mp4", src)
    pieces = write(tmp_path / "pieces.mp4", iter(np.split(src, sizes, axis=1)))
    assert len(whole) > 10 and pieces == whole
    mono = write(tmp_path / "mono.mp4", iter([src[0, :500], src[0, 500:]]))
    with av.open(str(tmp_path / "mono.mp4")) as c:
        assert c.streams.audio[0].codec_context.channels == 1 and mono
