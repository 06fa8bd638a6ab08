"""``rtdub camera`` with fake devices that implement the real interfaces, and its one-line
errors when no virtual camera or audio device exists."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from rtdub.cli.main import main
from rtdub.stream.camera import CameraRunner, DeviceError, SoundDeviceOutput
from rtdub.stream.dubsources import ClipSource
from rtdub.stream.mediatracks import FramesTrack
from rtdub.stream.session import StreamConfig

from .factories import speechlike
from .streamkit import make_pipeline, portrait_frames


class FakeCamera:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.closed = False

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True


class FakeSpeaker:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.closed = False

    def write(self, samples: np.ndarray) -> None:
        self.chunks.append(samples)

    def close(self) -> None:
        self.closed = True


async def test_camera_runner_feeds_dubbed_video_and_audio_to_the_devices() -> None:
    frames = portrait_frames(40)
    cam, spk = FakeCamera(), FakeSpeaker()
    speech = speechlike(1.6, seed=6) * 3
    runner = CameraRunner(
        FramesTrack(frames, 25), ClipSource(speech), cam, spk, StreamConfig(budget_ms=200), make_pipeline
    )
    await runner.start()
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(runner.ended.wait(), 10)
        elapsed = time.monotonic() - t0
    finally:
        await runner.aclose()
    assert cam.closed and spk.closed
    assert len(cam.frames) >= 20 and cam.frames[0].shape == frames[0].shape
    changed = [np.any(f != frames[i]) for i, f in enumerate(cam.frames[:5])]
    assert any(changed)  # dubbed, not copied (the face region differs from the source)
    audio = np.concatenate(spk.chunks)
    assert abs(audio.size - elapsed * 16000) < 0.5 * 16000  # paced in real time
    assert np.abs(audio).max() > 0.1  # the dubbed speech is heard


def test_camera_without_a_virtual_camera_is_a_one_line_error(
    talking_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        import pyvirtualcam

        pyvirtualcam.Camera(640, 480, 25).close()
    except Exception:
        pass
    else:
        pytest.skip("a virtual camera backend exists here")
    assert main(["camera", "--input", str(talking_clip)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "virtual camera" in err[0], err


def test_no_audio_device_is_a_clear_error() -> None:
    try:
        out = SoundDeviceOutput()
    except DeviceError as exc:
        msg = str(exc)
        assert "\n" not in msg and "audio" in msg
    else:
        out.close()
        pytest.skip("an audio output device exists here")
