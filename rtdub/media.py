"""Media I/O on PyAV: probing, audio loading (any rate, resampled), frame reading (any frame
rate, variable included) and atomic writing of an H.264/AAC MP4."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from . import atomic
from .audio import SAMPLE_RATE
from .exceptions import InputError, OutputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction  # average frame rate (variable-rate input is resampled to it)
    duration: float  # seconds, from the last frame's end when known
    n_frames: int  # container estimate, 0 when unknown


@dataclass(frozen=True)
class Frame:
    """One decoded RGB frame with its presentation time in seconds."""

    image: np.ndarray  # (H, W, 3) uint8, RGB
    time: float
    pts: int | None = None  # the stream's timestamp (its time base): what FrameReader.frames seeks to
    key: bool = False  # a keyframe: decoding can start here


def _open(path: str | os.PathLike[str]) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), "no such file")
    if not p.is_file():
        raise InputError(str(path), "not a regular file")
    if not os.access(p, os.R_OK):
        raise InputError(str(path), "permission denied")
    try:
        return av.open(str(p), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(str(path), f"not a readable media file ({type(exc).__name__})") from exc


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe the first video stream; InputError if there is none."""
    with _open(path) as c:
        if not c.streams.video:
            raise InputError(str(path), "no video stream")
        s = c.streams.video[0]
        fps = s.average_rate or s.guessed_rate or Fraction(25)
        dur = 0.0
        if s.duration is not None and s.time_base is not None:
            dur = float(s.duration * s.time_base)
        elif c.duration is not None:
            dur = c.duration / av.time_base
        return VideoInfo(s.codec_context.width, s.codec_context.height, Fraction(fps), dur, s.frames or 0)


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE, mono: bool = True) -> np.ndarray:
    """Decode the first audio stream, resampled to ``sample_rate``.

    In a file that also holds video, the samples are placed on :func:`iter_frames`' timeline,
    whose 0 is the first video frame: audio that starts later than the video (an edit list, a
    late stream) is preceded by silence, audio that starts earlier loses its lead, so sample
    ``k`` plays with the frame at ``k / sample_rate`` s as the file intends.

    Returns float32 of shape (n,) when ``mono`` else (channels, n) with 1 or 2 channels.
    :func:`audio_chunks` gives the same samples a piece at a time."""
    chunks = list(audio_chunks(path, sample_rate, mono))
    data = np.concatenate(chunks, axis=1)
    return data[0] if mono else data


def audio_chunks(
    path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE, mono: bool = True
) -> Iterator[np.ndarray]:
    """:func:`load_audio`'s samples as float32 pieces of shape (channels, n), in order, n > 0:
    what a long audio track is read with, so that it is never held whole. The same errors
    (an :class:`InputError`) come when the first piece is asked for, or later for a stream
    that breaks on the way."""
    with _open(path) as c:
        if not c.streams.audio:
            raise InputError(str(path), "no audio stream")
        stream = c.streams.audio[0]
        layout = "mono" if mono or stream.codec_context.channels < 2 else "stereo"
        n_ch = 1 if layout == "mono" else 2
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        has_video = bool(c.streams.video)
        lead: int | None = None if has_video else 0  # silence to add (> 0) or samples to drop (< 0)
        held: list[np.ndarray] = []  # the pieces before the lead is known
        seen = given = 0  # samples decoded, samples given

        def place(piece: np.ndarray) -> Iterator[np.ndarray]:
            nonlocal lead, given
            if lead is None:
                held.append(piece)
                return
            if lead > 0:
                yield np.zeros((n_ch, lead), np.float32)
                given += lead
                lead = 0
            if lead < 0:
                cut = min(-lead, piece.shape[1])
                piece = piece[:, cut:]
                lead += cut
            if piece.shape[1]:
                given += piece.shape[1]
                yield piece

        def resampled(frame: av.AudioFrame | None) -> Iterator[np.ndarray]:
            nonlocal seen
            for out in resampler.resample(frame):
                piece = out.to_ndarray().astype(np.float32, copy=False)
                seen += piece.shape[1]
                yield from place(piece)

        try:
            for frame in c.decode(stream):
                if lead is None and frame.time is not None:
                    lead = int(round((float(frame.time) - _first_frame_time(path)) * sample_rate))
                    for piece in held:
                        yield from place(piece)
                    held.clear()
                yield from resampled(frame)
            yield from resampled(None)
        except av.error.FFmpegError as exc:
            raise InputError(str(path), f"audio stream cannot be decoded ({exc})") from exc
        if lead is None:  # no timestamps: the audio from its own start
            lead = 0
            for piece in held:
                yield from place(piece)
        if given == 0:
            if seen:
                raise InputError(str(path), "audio stream ends before the video starts")
            raise InputError(str(path), "audio stream holds no samples")


def audio_length(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> int:
    """How many samples :func:`load_audio` gives at ``sample_rate``, without holding them."""
    return sum(piece.shape[1] for piece in audio_chunks(path, sample_rate))


def _first_frame_time(path: str | os.PathLike[str]) -> float:
    """The presentation time of the first decoded video frame: the 0 of :func:`iter_frames`'
    timeline (which takes the same frame as its origin); 0 when no frame decodes (the audio
    is then taken from its own start)."""
    with _open(path) as c:
        try:
            for frame in c.decode(c.streams.video[0]):
                return float(frame.time) if frame.time is not None else 0.0
        except av.error.FFmpegError:
            pass
    return 0.0


def audio_sample_rate(path: str | os.PathLike[str]) -> int:
    with _open(path) as c:
        if not c.streams.audio:
            raise InputError(str(path), "no audio stream")
        return int(c.streams.audio[0].codec_context.sample_rate or SAMPLE_RATE)


def iter_frames(path: str | os.PathLike[str]) -> Iterator[Frame]:
    """Decode the first video stream as RGB frames with their times, in presentation order."""
    with FrameReader(path) as reader:
        yield from reader.frames()


class FrameReader:
    """The first video stream of a file, decoded in presentation order: from its start, or from
    a keyframe after a seek (one open file for several passes; :func:`iter_frames` is one pass
    from the start).

    Times are on one timeline: 0 is the first frame of the first pass from the start. A time
    that does not increase (broken timestamps) is moved 1 ms after the one before it; a frame
    without a timestamp is placed 1/25 s after the one before. After a seek the times are the
    container's clock on that timeline, not repaired: identify frames by ``pts`` there."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 0) -> None:
        self.path = Path(path)
        # decoding threads: 0 is FFmpeg's own count (one per core and one more, up to 16);
        # frame threading holds about a frame per thread
        self.threads = threads
        self._c = self._open()
        self._t0: float | None = None
        self._pass = 0  # a new pass makes the iterators of the earlier ones stop
        self._fresh = True  # nothing decoded yet: a pass from the start needs no reopening

    def _open(self) -> av.container.InputContainer:
        c = _open(self.path)
        if not c.streams.video:
            c.close()
            raise InputError(str(self.path), "no video stream")
        c.streams.video[0].thread_type = "AUTO"
        if self.threads > 0:
            c.streams.video[0].codec_context.thread_count = self.threads
        return c

    def close(self) -> None:
        self._pass += 1
        self._c.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames(self, seek_pts: int | None = None) -> Iterator[Frame]:
        """A new pass: from the start (``seek_pts`` None), else from the keyframe at or before
        the frame whose timestamp is ``seek_pts`` (frames before that one may come first: the
        caller skips them). The iterator of an earlier pass stops."""
        self._pass += 1
        this = self._pass
        if seek_pts is None and not self._fresh:
            self._c.close()  # the start exactly as the first pass saw it: open the file again
            self._c = self._open()
        self._fresh = False
        stream = self._c.streams.video[0]
        if seek_pts is not None:
            try:
                self._c.seek(seek_pts, stream=stream, backward=True)
            except av.error.FFmpegError as exc:
                raise InputError(str(self.path), f"cannot seek in the video stream ({exc})") from exc
        last = -1.0
        decoded = self._c.decode(stream)
        while this == self._pass:
            try:
                frame = next(decoded, None)
            except av.error.FFmpegError as exc:
                raise InputError(str(self.path), f"video stream cannot be decoded ({exc})") from exc
            if frame is None:
                return
            if seek_pts is None:
                t = frame.time if frame.time is not None else (last + 1 / 25 if last >= 0 else 0.0)
                if self._t0 is None:
                    self._t0 = t
                t = t - self._t0
                if t <= last:  # broken timestamps: keep time strictly increasing
                    t = last + 1e-3
                last = t
            else:
                t = (frame.time if frame.time is not None else 0.0) - (self._t0 or 0.0)
            yield Frame(frame.to_ndarray(format="rgb24"), t, frame.pts, bool(frame.key_frame))


class VideoWriter:
    """Write RGB frames (and optionally audio) to an MP4, atomically.

    Everything goes to a hidden temporary file beside ``path``; :meth:`close` renames it into
    place. An exception inside the ``with`` block (Ctrl-C included) deletes the temporary file,
    so a partial output never appears under ``path``.

    ``audio`` is an array, (n,) or (channels, n), or pieces of one, e.g. :func:`audio_chunks`:
    pieces are taken only as the video reaches them, so a long track is never held whole.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: Fraction | float,
        width: int,
        height: int,
        audio: np.ndarray | Iterable[np.ndarray] | None = None,
        audio_rate: int = SAMPLE_RATE,
        crf: int = 18,
        preset: str = "veryfast",
        keyint: int | None = None,
        lookahead: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        # 0666 less the umask, as any new file; an existing output's mode is kept (atomic.replace)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = atomic.mkstemp(self.path.parent, prefix=f".{self.path.stem}.", suffix=".part.mp4")
        except OSError as exc:
            why = oserror_text(exc)
            raise OutputError(str(self.path), f"cannot create a file in {self.path.parent} ({why})") from exc
        os.close(fd)
        self._tmp = Path(tmp)
        self._closed = True  # until the container is open: abort() then only removes the file
        try:
            self._start(fps, width, height, audio, audio_rate, crf, preset, keyint, lookahead, threads)
        except BaseException as exc:
            if hasattr(self, "_c"):
                with contextlib.suppress(Exception):
                    self._c.close()
            self._tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise OutputError(str(self.path), f"cannot write ({oserror_text(exc)})") from exc
            raise

    def _start(
        self,
        fps: Fraction | float,
        width: int,
        height: int,
        audio: np.ndarray | Iterable[np.ndarray] | None,
        audio_rate: int,
        crf: int,
        preset: str,
        keyint: int | None,
        lookahead: int | None,
        threads: int | None = None,
    ) -> None:
        self.width = width - width % 2
        self.height = height - height % 2
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self._c = av.open(str(self._tmp), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._v: av.VideoStream = self._c.add_stream(codec, rate=self.fps)  # type: ignore[assignment]
        self._v.width, self._v.height = self.width, self.height
        self._v.pix_fmt = "yuv420p"
        if codec == "libx264":
            options: dict[str, object] = {"crf": str(crf), "preset": preset}
            if keyint:
                options["g"] = str(keyint)  # the GOP length (x264's default is 250)
            if lookahead is not None:
                options["rc-lookahead"] = str(lookahead)  # frames x264 holds to plan its rate
            if threads is not None:
                options["threads"] = str(threads)  # x264's own count is 1.5 per core; each holds frames
            self._v.options = options
        self._n = 0
        self._pieces: Iterator[np.ndarray] | None = None  # the audio not yet taken
        self._abuf = np.zeros((1, 0), np.float32)  # taken, not yet encoded
        if audio is not None:
            self._pieces = iter([audio]) if isinstance(audio, np.ndarray) else iter(audio)
            first = self._next_piece()
            channels = 1 if first is None else first.shape[0]
            self._abuf = first if first is not None else np.zeros((channels, 0), np.float32)
            self._a: av.AudioStream = self._c.add_stream("aac", rate=audio_rate)
            self._a.layout = "mono" if channels == 1 else "stereo"
            self._arate = audio_rate
            self._apos = 0
        self._has_audio = audio is not None
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()

    @property
    def frames_written(self) -> int:
        return self._n

    def write(self, image: np.ndarray) -> None:
        """Append one frame; :class:`OutputError` when the file cannot take it (a full disk)."""
        img = np.ascontiguousarray(image[: self.height, : self.width])
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self._n
        frame.time_base = 1 / self.fps
        try:
            for pkt in self._v.encode(frame):
                self._c.mux(pkt)
            self._n += 1
            self._write_audio_until(self._n / self.fps)
        except OSError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> OutputError:
        """The error to raise for ``exc`` met while writing (the caller aborts)."""
        logger.debug("writing %s failed after %d frames: %s", self.path, self._n, exc)
        return OutputError(str(self.path), f"cannot write ({oserror_text(exc)}) after {self._n} frames")

    def _next_piece(self) -> np.ndarray | None:
        """The next piece of the audio as float32 (channels, n), or None at its end."""
        while self._pieces is not None:
            piece = next(self._pieces, None)
            if piece is None:
                self._pieces = None
                break
            a = np.atleast_2d(np.asarray(piece, dtype=np.float32))
            if a.shape[1]:
                return a
        return None

    def _drop_pieces(self) -> None:
        """Stop taking audio: a generator (an open file) is closed now, not when collected."""
        pieces, self._pieces = self._pieces, None
        close = getattr(pieces, "close", None)
        if close is not None:
            close()

    def _take(self, n: int) -> np.ndarray:
        """Up to ``n`` samples of the audio (fewer only at its end), taking pieces as needed."""
        while self._abuf.shape[1] < n and (piece := self._next_piece()) is not None:
            self._abuf = piece if self._abuf.shape[1] == 0 else np.concatenate([self._abuf, piece], axis=1)
        part, self._abuf = self._abuf[:, :n], self._abuf[:, n:]
        return part

    def _write_audio_until(self, t: float | Fraction | None) -> None:
        """Encode the audio up to time ``t`` in whole 1024-sample frames (all of it, the last
        frame padded with silence, when ``t`` is None)."""
        if not self._has_audio:
            return
        chunk = 1024
        while t is None or self._apos + chunk <= int(t * self._arate):
            part = self._take(chunk)
            if part.shape[1] == 0 or (t is not None and part.shape[1] < chunk):
                self._abuf = part if self._abuf.shape[1] == 0 else np.concatenate([part, self._abuf], axis=1)
                return  # the end of the audio: its last samples wait for close
            part = np.clip(part, -1, 1)
            if part.shape[1] < chunk:
                part = np.pad(part, ((0, 0), (0, chunk - part.shape[1])))
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=self._a.layout.name)
            af.sample_rate = self._arate
            af.pts = self._apos
            af.time_base = Fraction(1, self._arate)
            for pkt in self._a.encode(af):
                self._c.mux(pkt)
            self._apos += chunk

    def close(self) -> None:
        """Finish the file and rename it into place; on any failure nothing is left behind."""
        if self._closed:
            return
        try:
            for pkt in self._v.encode(None):
                self._c.mux(pkt)
            if self._has_audio:
                self._write_audio_until(None)
                for pkt in self._a.encode(None):
                    self._c.mux(pkt)
            self._c.close()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise self._failed(exc) from exc
            raise
        self._closed = True
        try:
            atomic.replace(self._tmp, self.path)
        except BaseException as exc:
            self._tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                why = oserror_text(exc)
                raise OutputError(str(self.path), f"cannot rename the finished file into place ({why})") from exc
            raise
        logger.info("wrote %s: %d frames", self.path, self._n)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._drop_pieces()
        try:
            self._c.close()
        except Exception:  # noqa: BLE001 - best effort on the error path
            pass
        self._tmp.unlink(missing_ok=True)


def oserror_text(exc: OSError) -> str:
    """An OSError in words, without the path (the message names it already)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    return exc.strerror.lower() if exc.strerror else str(exc)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples as 16-bit PCM WAV, atomically."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    pcm = (np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).astype(np.int16)[None]
    try:
        with av.open(str(tmp), "w", format="wav") as c:
            s: av.AudioStream = c.add_stream("pcm_s16le", rate=sample_rate)
            s.layout = "mono"
            f = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            f.sample_rate = sample_rate
            f.pts = 0
            f.time_base = Fraction(1, sample_rate)
            for p in s.encode(f):
                c.mux(p)
            for p in s.encode(None):
                c.mux(p)
        atomic.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
