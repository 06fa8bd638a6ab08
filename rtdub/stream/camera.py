"""``rtdub camera``: dub a camera (or a file) into an OS virtual camera.

The call app picks the virtual camera (pyvirtualcam: v4l2loopback on Linux, OBS on Windows
and macOS) as its webcam and must hear the dubbed audio in step with it: that audio goes to
an output device through sounddevice, which users route to a virtual microphone. The dubbed
audio comes from an input device (an interpreter's or a translation app's output), a file, or
the input's own audio track.

Devices sit behind small interfaces (:class:`VirtualCamera`, :class:`AudioOutput`) so tests
drive the same runner with fakes. A missing backend or device raises :class:`DeviceError`
with a one-line message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..audio import SAMPLE_RATE
from ..exceptions import RtdubError
from .dubsources import DubAudioSource, PcmSocketSource, Sink, TrackSource, file_source
from .eventsocket import EventSocket
from .peer import drain
from .session import DubSession, PipelineFactory, StreamConfig

logger = logging.getLogger(__name__)


class DeviceError(RtdubError):
    """A virtual camera or audio device is missing or unusable."""


class VirtualCamera(Protocol):
    def send(self, frame: np.ndarray) -> None:
        """Show one RGB uint8 frame of the camera's size."""

    def close(self) -> None: ...


class AudioOutput(Protocol):
    def write(self, samples: np.ndarray) -> None:
        """Play 16 kHz mono float samples (non-blocking: drops when its buffer is full)."""

    def close(self) -> None: ...


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PyVirtualCam:
    """A pyvirtualcam camera; frames of another size are resized to fit."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise DeviceError("no virtual camera support: pip install pyvirtualcam") from exc
        try:
            self._cam = pyvirtualcam.Camera(width=width, height=height, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB)
        except Exception as exc:  # pyvirtualcam raises RuntimeError per backend
            raise DeviceError(f"no virtual camera backend: {_one_line(exc)}") from exc
        self.width, self.height = width, height
        logger.info("virtual camera open", extra={"device": self._cam.device})

    def send(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.height, self.width):
            import cv2

            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self._cam.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        self._cam.close()


def _sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError as exc:
        raise DeviceError("no audio support: pip install sounddevice") from exc
    except OSError as exc:  # the module loads PortAudio at import time
        raise DeviceError(f"no audio device support: {_one_line(exc)} (install libportaudio2)") from exc
    return sounddevice


class SoundDeviceOutput:
    """Plays through a bounded buffer (0.5 s): when the device lags, the oldest audio goes."""

    def __init__(self, device: str | None = None, max_buffer_s: float = 0.5) -> None:
        sd = _sounddevice()
        self._lock = threading.Lock()
        self._buf = np.zeros(0, np.float32)
        self._max = int(max_buffer_s * SAMPLE_RATE)
        self.dropped = 0
        try:
            self._stream = sd.OutputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="float32", device=device, callback=self._callback
            )
            self._stream.start()
        except Exception as exc:  # PortAudioError, ValueError for unknown devices
            raise DeviceError(f"no audio output device: {_one_line(exc)}") from exc

    def _callback(self, out: np.ndarray, frames: int, time: object, status: object) -> None:
        with self._lock:
            n = min(frames, self._buf.size)
            out[:n, 0] = self._buf[:n]
            out[n:, 0] = 0.0
            self._buf = self._buf[n:]

    def write(self, samples: np.ndarray) -> None:
        with self._lock:
            self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32)])
            if self._buf.size > self._max:
                self.dropped += self._buf.size - self._max
                self._buf = self._buf[-self._max :]

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


class DeviceSource(DubAudioSource):
    """Dubbed audio from an audio input device, timed by arrival (it already lags)."""

    synchronous = False

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self.name = f"device:{device or 'default'}"
        self._stream: Any = None

    async def start(self, sink: Sink, clock: Any) -> None:
        sd = _sounddevice()
        loop = asyncio.get_running_loop()

        def callback(indata: np.ndarray, frames: int, time: object, status: object) -> None:
            x = indata[:, 0].astype(np.float32).copy()
            t = clock() - frames / SAMPLE_RATE
            loop.call_soon_threadsafe(sink, t, x)

        try:
            self._stream = sd.InputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="float32", device=self.device, callback=callback
            )
            self._stream.start()
        except Exception as exc:
            raise DeviceError(f"no audio input device: {_one_line(exc)}") from exc

    async def aclose(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


@dataclass(frozen=True)
class CameraConfig:
    input: str
    dub_input: str | None = None
    dub_file: Path | None = None
    dub_socket: tuple[str, int] | str | None = None
    events_socket: tuple[str, int] | str | None = None  # phoneme or viseme events (eventsocket)
    audio_output: str | None = None
    fps: float = 25.0
    width: int = 640
    height: int = 480
    stream: StreamConfig = field(default_factory=StreamConfig)


class CameraRunner:
    """Session output to devices: one task per track. Lifecycle ``start()``/``aclose()``."""

    def __init__(
        self,
        video: MediaStreamTrack,
        dub: DubAudioSource | None,
        camera: VirtualCamera,
        speaker: AudioOutput | None,
        config: StreamConfig | None = None,
        factory: PipelineFactory | None = None,
        events_socket: tuple[str, int] | str | None = None,
    ) -> None:
        self.session = DubSession(config or StreamConfig(), factory, name="camera")
        self.session.set_video(video)
        if dub is not None:
            self.session.set_dub(dub)
        self.events = None if events_socket is None else EventSocket(events_socket, self.session.attach_events())
        self.camera = camera
        self.speaker = speaker
        self.frames = 0
        self.ended = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.events is not None:
            await self.events.start()
        await self.session.start()
        self._tasks.append(asyncio.create_task(self._video(), name="rtdub-camera-video"))
        if self.speaker is not None:
            self._tasks.append(asyncio.create_task(self._audio(), name="rtdub-camera-audio"))

    async def _video(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await self.session.video.recv()
                rgb = frame.to_ndarray(format="rgb24")
                await loop.run_in_executor(None, self.camera.send, rgb)
                self.frames += 1
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("virtual camera output failed")
        finally:
            self.ended.set()

    async def _audio(self) -> None:
        assert self.speaker is not None
        try:
            while True:
                frame = await self.session.audio.recv()
                pcm = frame.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
                self.speaker.write(pcm)
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("audio output failed")

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.events is not None:
            await self.events.aclose()
        await self.session.aclose()
        self.camera.close()
        if self.speaker is not None:
            self.speaker.close()


def open_input(spec: str) -> Any:
    """aiortc's MediaPlayer on a file or a camera device (v4l2 on Linux)."""
    from aiortc.contrib.media import MediaPlayer

    try:
        if spec.startswith("/dev/video"):
            return MediaPlayer(spec, format="v4l2", options={"framerate": "25", "video_size": "640x480"})
        if not Path(spec).is_file():
            raise DeviceError(f"{spec}: no such file or camera device")
        return MediaPlayer(spec)
    except (av.error.FFmpegError, OSError) as exc:
        raise DeviceError(f"{spec}: cannot open ({_one_line(exc)})") from exc


async def run_camera(config: CameraConfig) -> None:
    """Run until SIGINT/SIGTERM or the end of the input."""
    camera = PyVirtualCam(config.width, config.height, config.fps)
    speaker: AudioOutput | None = None
    dub: DubAudioSource | None = None
    player = None
    try:
        speaker = SoundDeviceOutput(config.audio_output)
        player = open_input(config.input)
        if player.video is None:
            raise DeviceError(f"{config.input}: no video")
        if config.dub_input is not None:
            dub = DeviceSource(config.dub_input)
        elif config.dub_socket is not None:
            dub = PcmSocketSource(config.dub_socket)
        elif config.dub_file is not None:
            dub = file_source(config.dub_file)
        elif player.audio is not None:
            dub = TrackSource(player.audio, synchronous=True, name="self")
    except BaseException:
        camera.close()
        if speaker is not None:
            speaker.close()
        raise
    runner = CameraRunner(player.video, dub, camera, speaker, config.stream, events_socket=config.events_socket)
    unread = None  # the input's own audio, when something else is the dubbed audio, is drained
    if player.audio is not None and not isinstance(dub, TrackSource):
        unread = asyncio.create_task(drain(player.audio), name="rtdub-camera-drain")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.start()
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(runner.ended.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
    finally:
        if unread is not None:
            unread.cancel()
        await runner.aclose()
        for t in (player.video, player.audio):
            if t is not None:
                t.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
