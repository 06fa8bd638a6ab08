"""The ping-pong loop over a video shorter than the audio, in bounded memory and disk.

The reference is what ``LoopedFrames`` did before its spool was bounded: every frame
decoded once and kept, the frame at each output time taken from that list. A video that
fits the spool must give exactly those frames without decoding again; one that does not
(a budget of a few frames here) must give exactly the same frames by decoding again, for
any GOP (one keyframe, short GOPs, scene cuts, open GOPs), container and timestamps (none,
in a raw H.264 stream), and output rate."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from rtdub import media
from rtdub.cli.main import main
from rtdub.dub import FrameSpool, LoopedFrames

from .factories import speechlike, write_wav

SIZE = 64
FRAME_BYTES = SIZE * SIZE * 3


def reference_at(frames: list[media.Frame], t: float) -> np.ndarray:
    """The old rule on the whole decoded list: the last frame at or before ``t`` on the first
    pass, then the same on the ping-pong time u = |t mod 2P| reflected at P (P = the last
    frame's time)."""
    times = [f.time for f in frames]
    u = t
    if t > times[-1] + 1e-6:
        period = times[-1]
        u = math.fmod(t, 2 * period)
        if u > period:
            u = 2 * period - u
    j = int(np.searchsorted(times, u + 1e-6, side="right")) - 1
    return frames[max(0, j)].image


def scenes(n: int, cut_every: int = 9, seed: int = 2) -> list[np.ndarray]:
    """Noise that slides one pixel a frame, with a new noise image every ``cut_every`` frames
    (scene cuts: x264 puts keyframes there)."""
    rng = np.random.default_rng(seed)
    out = []
    base = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        if i and i % cut_every == 0:
            base = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        out.append(np.roll(base, i, axis=1))
    return out


def encode(path: Path, frames: list[np.ndarray], fmt: str, options: dict[str, str], codec: str = "libx264") -> Path:
    with av.open(str(path), "w", format=fmt) as c:
        s: av.VideoStream = c.add_stream(codec, rate=25)  # type: ignore[assignment]
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        s.options = options  # type: ignore[assignment]
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


CLIPS = {
    "one keyframe (mp4)": ("mp4", {"g": "250"}, "libx264"),
    "GOP of 7 (mp4)": ("mp4", {"g": "7", "x264-params": "scenecut=0"}, "libx264"),
    "scene cuts, 4 references (mkv)": ("matroska", {"x264-params": "keyint=50:min-keyint=5:ref=4"}, "libx264"),
    "open GOP with B-frames (mp4)": ("mp4", {"x264-params": "open-gop=1:keyint=20:min-keyint=3:bframes=3"}, "libx264"),
    "raw H.264, no timestamps": ("h264", {"g": "10"}, "libx264"),
    "MPEG-4 part 2 (avi)": ("avi", {"g": "8"}, "mpeg4"),
}


@pytest.fixture(scope="module", params=list(CLIPS))
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fmt, options, codec = CLIPS[request.param]
    ext = {"mp4": "mp4", "matroska": "mkv", "h264": "h264", "avi": "avi"}[fmt]
    return encode(tmp_path_factory.mktemp("loop") / f"clip.{ext}", scenes(41), fmt, options, codec)


def check_loop(lf: LoopedFrames, frames: list[media.Frame], fps: float, loops: float = 3.6) -> None:
    period = frames[-1].time
    for i in range(int(loops * period * fps) + 1):
        t = i / fps
        got, want = lf.at(t), reference_at(frames, t)
        assert np.array_equal(got, want), f"t={t:.3f}: not the reference frame"


def test_a_video_that_fits_is_decoded_once(clip: Path) -> None:
    frames = list(media.iter_frames(clip))
    lf = LoopedFrames(clip, spool=True, spool_bytes=len(frames) * FRAME_BYTES, expect=media.probe_video(clip))
    try:
        check_loop(lf, frames, 25.0)
        assert lf.decoded_again == 0
    finally:
        lf.close()


@pytest.mark.parametrize(("slots", "fps"), [(1, 25.0), (4, 25.0), (6, 30.0), (5, 17.0)])
def test_a_longer_video_is_decoded_again_to_the_same_frames(clip: Path, slots: int, fps: float) -> None:
    frames = list(media.iter_frames(clip))
    lf = LoopedFrames(clip, spool=True, spool_bytes=slots * FRAME_BYTES, expect=media.probe_video(clip))
    try:
        check_loop(lf, frames, fps)
        assert lf.decoded_again > 0  # the budget held only a few frames: the loop decoded again
    finally:
        lf.close()


def test_without_a_spool_the_last_frame_is_held(tmp_path: Path) -> None:
    clip = encode(tmp_path / "c.mp4", scenes(10), "mp4", {"g": "5"})
    frames = list(media.iter_frames(clip))
    lf = LoopedFrames(clip, spool=False)
    try:
        assert np.array_equal(lf.at(5.0), frames[-1].image)
    finally:
        lf.close()


class LyingReader(media.FrameReader):
    """A reader whose passes after a seek to ``liar``'s timestamp return frames one grey level
    off (as a keyframe that is no entry point would: it references frames before it)."""

    def __init__(self, path: Path, liar: int) -> None:
        super().__init__(path)
        self.liar = liar
        self.lies = 0

    def frames(self, seek_pts: int | None = None) -> Iterator[media.Frame]:
        for fr in super().frames(seek_pts):
            if seek_pts == self.liar:
                self.lies += 1
                yield replace(fr, image=fr.image ^ 1)
            else:
                yield fr


def test_a_keyframe_that_gives_other_frames_is_not_used_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = encode(tmp_path / "c.mp4", scenes(40), "mp4", {"g": "8", "x264-params": "scenecut=0"})
    frames = list(media.iter_frames(clip))
    keys = [i for i, f in enumerate(frames) if f.key]
    assert len(keys) >= 4
    liar_pts = frames[keys[2]].pts
    assert liar_pts is not None
    reader = LyingReader(clip, liar_pts)
    lf = LoopedFrames(clip, spool=True, spool_bytes=3 * FRAME_BYTES, reader=reader)
    try:
        with caplog.at_level(logging.WARNING, logger="rtdub.dub"):
            check_loop(lf, frames, 25.0)
        assert reader.lies > 0  # the bad keyframe was tried, found out, and dropped: once
        dropped = [r.getMessage() for r in caplog.records if "does not give frame" in r.getMessage()]
        assert len(dropped) == 1 and dropped[0].startswith(f"decoding from keyframe {keys[2]} ")
    finally:
        lf.close()


def test_spool_keeps_at_most_its_budget_and_drops_the_oldest(tmp_path: Path) -> None:
    spool = FrameSpool((SIZE, SIZE, 3), 3 * FRAME_BYTES + 100)
    try:
        assert spool.slots == 3
        imgs = scenes(7)
        for i, img in enumerate(imgs):
            spool.put(i, img)
        assert [spool.get(i) is not None for i in range(7)] == [False] * 4 + [True] * 3
        assert all(np.array_equal(spool.get(i), imgs[i]) for i in (4, 5, 6))  # type: ignore[arg-type]
        assert spool._file.seek(0, 2) <= 3 * FRAME_BYTES  # the file never outgrows the budget
    finally:
        spool.close()


def test_dub_output_is_the_same_when_the_loop_decodes_again(
    tmp_path: Path, talking_clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The whole dub, with the spool holding the 2 s clip and with a spool of 3 frames (the
    loop decodes again): the same frames out."""
    audio = write_wav(tmp_path / "a.wav", speechlike(5.0, seed=8))  # 2.5 passes over the 2 s clip
    outs = []
    for name, mb in (("whole", None), ("tiny", 2.5)):
        if mb is not None:
            monkeypatch.setenv("RTDUB_SPOOL_MB", str(mb))  # 3 frames of 512×512
        out = tmp_path / f"{name}.mp4"
        with caplog.at_level(logging.INFO, logger="rtdub.dub"):
            assert main(["dub", "--video", str(talking_clip), "--audio", str(audio), "-o", str(out), "-q"]) == 0
        outs.append(np.stack([f.image for f in media.iter_frames(out)]))
    outgrown = [r.getMessage() for r in caplog.records if "outgrow the frame spool" in r.getMessage()]
    assert outgrown == [
        "the video's 50 frames outgrow the frame spool's 3: looping decodes again (1 keyframes, timestamps usable)"
    ]  # only the tiny spool decoded again
    assert outs[0].shape[0] == 125
    assert np.array_equal(outs[0], outs[1])


def test_bad_spool_budget_is_a_usage_error(
    tmp_path: Path,
    talking_clip: Path,
    dubbed_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RTDUB_SPOOL_MB", "lots")
    assert main(["dub", "--video", str(talking_clip), "--audio", str(dubbed_wav), "-o", str(tmp_path / "o.mp4")]) == 2
    assert (
        capsys.readouterr().err.strip() == "rtdub: error: RTDUB_SPOOL_MB: must be a number of megabytes > 0, got 'lots'"
    )


def test_spool_takes_at_most_half_the_free_temporary_space(monkeypatch: pytest.MonkeyPatch) -> None:
    class SmallDisk:
        f_bavail, f_frsize = 5, FRAME_BYTES  # room for 5 frames

    monkeypatch.setattr(os, "statvfs", lambda path: SmallDisk())
    spool = FrameSpool((SIZE, SIZE, 3), 100 * FRAME_BYTES)
    try:
        assert spool.slots == 2
    finally:
        spool.close()
