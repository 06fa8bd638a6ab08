"""Offline dubbing of a file: a talking-head video plus a dubbed audio track -> an MP4 whose
lips follow the new audio.

The output lasts as long as the dubbed audio. It runs at the video's average frame rate (a
variable-rate input is resampled by presentation time). When the video is shorter than the
audio it continues by ping-pong looping (forward, then backward), so there is never a jump;
the frames the loop shows again come from a bounded spool on disk or are decoded again
(:class:`LoopedFrames`), so memory and temporary disk stay bounded at any length.

The paths are checked before any work (:func:`check_paths`): an output that is one of the
inputs (the same path, a symbolic or a hard link), ``--compare`` equal to ``-o``, an output
that is a directory or not a regular file, or a folder that cannot be written is refused
with an :class:`InputError`. A missing parent folder of an output is created (as
``mkdir -p``; it stays when the run fails later).

With several faces in the frame one is dubbed, chosen by ``DubOptions.face`` (the largest
by default; :mod:`rtdub.face.tracker`); the report counts the frames with more than one
face and a warning says so once.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import logging
import math
import os
import tempfile
import time
import zlib
from array import array
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic, audio, media
from .drive.choice import DriveSpec, make_drive
from .engine import EngineConfig, build_pipeline
from .exceptions import InputError, OutputError
from .face.tracker import FaceChoice, FaceTracker, TrackerConfig
from .render.pipeline import STAGES

logger = logging.getLogger(__name__)

# the frame spool's budget on disk (TMPDIR): a video that fits is decoded once, a longer one
# keeps this much of its frames for each turn of the loop and decodes the rest again
SPOOL_BYTES = 768 * 2**20
# x264's rate-control lookahead holds this many frames at 1080p (veryfast's own); larger
# outputs hold fewer (encoder_lookahead)
LOOKAHEAD_1080P = 10
# most decoding and encoding threads at 1080p, fewer in proportion for larger frames (3 at 4K):
# frame threading holds about a frame per thread (codec_threads)
THREADS_1080P = 12
# seconds of video between whole-frame face counts while a face is tracked (the report's
# count of frames with several faces)
FACE_RECOUNT_S = 0.5


@dataclass(frozen=True)
class DubOptions:
    video: Path
    audio: Path
    output: Path
    engine: EngineConfig = field(default_factory=EngineConfig.offline)  # model, backend, threads, pipeline
    compare: Path | None = None  # also write input | output side by side here
    check_locality: bool = False  # verify that only masked pixels changed (costs a copy)
    face: FaceChoice = "largest"  # with several faces: "largest", "center" or an index from the left
    spool_bytes: int = SPOOL_BYTES  # most temporary disk the looping frames take
    drive: DriveSpec = field(default_factory=DriveSpec)  # lips from phonemes or text (rtdub/drive/choice.py)


@dataclass
class DubReport:
    output: Path
    frames: int = 0
    faces: int = 0
    no_face: int = 0
    silent: int = 0
    multi_face: int = 0  # frames in which more than one face was counted
    most_faces: int = 0  # the most faces counted in one frame
    drive: str = "audio"  # what moved the lips: audio, phonemes or text
    drive_fallback: int = 0  # with phonemes or text: frames that took the audio drive
    duration: float = 0.0
    wall: float = 0.0
    fps: float = 0.0
    # ms per frame and stage, as 4-byte floats (a Python list took 32 bytes a value: 6 MB for
    # 10 minutes at 30 fps, growing with the input)
    stage_ms: dict[str, array[float]] = field(default_factory=dict)
    pixels_changed_outside_mask: int | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.duration / self.wall if self.wall > 0 else 0.0

    def percentiles(self) -> dict[str, tuple[float, float]]:
        return {k: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for k, v in self.stage_ms.items() if v}


# --- the paths ------------------------------------------------------------------------------


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path, or (both existing) the
    same inode through a symbolic or hard link."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symbolic-link loop
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def output_problem(path: Path) -> str | None:
    """Why ``path`` cannot take an output, or None; creates its missing parent folders."""
    if path.is_dir():
        return "is a directory (give a file name for the output)"
    if path.exists() and not path.is_file():
        return "exists and is not a regular file"
    problem = atomic.writable_dir(path)
    parent = path.parent
    if problem is None:  # os.access can say yes where a write fails (ACLs, root on NFS, a read-only mount)
        try:
            fd, probe = atomic.mkstemp(parent, prefix=".rtdub-probe-", suffix=".tmp")
        except OSError as exc:
            problem = f"{parent} is not writable ({media.oserror_text(exc)})"
        else:
            os.close(fd)
            os.unlink(probe)
    if problem is not None and parent.is_dir():
        with contextlib.suppress(OSError):
            if os.statvfs(parent).f_flag & os.ST_RDONLY:
                problem = f"{parent} is on a read-only file system"
    return problem


def check_paths(opts: DubOptions) -> None:
    """Refuse, before any work, what would destroy an input or could not be written: an
    :class:`InputError` naming the output."""
    inputs = {"--video": opts.video, "--audio": opts.audio}
    outputs = {"-o": opts.output} | ({"--compare": opts.compare} if opts.compare is not None else {})
    for flag, out in outputs.items():
        for in_flag, src in inputs.items():
            if same_file(out, src):
                raise InputError(str(out), f"{flag} is the {in_flag} input {src}: refusing to overwrite an input")
    if opts.compare is not None and same_file(opts.compare, opts.output):
        raise InputError(str(opts.compare), "--compare is the same file as -o")
    for out in outputs.values():
        if (problem := output_problem(out)) is not None:
            raise InputError(str(out), problem)


# --- the looping frames ---------------------------------------------------------------------


class FrameSpool:
    """A bounded ring of decoded frames in an unnamed temporary file in TMPDIR (the system
    removes it when it is closed, and also when the process is killed).

    Drop policy: frame ``i`` goes to slot ``i % slots`` and replaces the frame that was there,
    which is decoded again if it is wanted later. Frames are read back with plain reads, not a
    memory map, so the spool does not count in the process's resident memory. The budget is
    also held to half the space free in TMPDIR (fewer slots cost decoding, not correctness)."""

    def __init__(self, shape: tuple[int, ...], budget_bytes: int) -> None:
        self.shape = shape
        self.frame_bytes = int(np.prod(shape))
        where = tempfile.gettempdir()
        try:
            st = os.statvfs(where)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = budget_bytes * 2
        if free // 2 < budget_bytes:
            logger.info("frame spool: %s has %.0f MB free, the spool takes at most half", where, free / 2**20)
        self.slots = max(1, min(budget_bytes, free // 2) // self.frame_bytes)
        self._tags = [-1] * self.slots  # the frame each slot holds
        try:
            self._file = tempfile.TemporaryFile(prefix="rtdub-spool-")
        except OSError as exc:
            raise OutputError(f"frame spool in {where}", f"cannot create ({media.oserror_text(exc)})") from exc
        self.written = 0  # bytes written, for the log

    def put(self, i: int, image: np.ndarray) -> None:
        slot = i % self.slots
        self._tags[slot] = -1
        data = np.ascontiguousarray(image, dtype=np.uint8).data.cast("B")
        base = slot * self.frame_bytes
        done = 0
        try:
            while done < len(data):
                done += os.pwrite(self._file.fileno(), data[done:], base + done)
        except OSError as exc:
            need = self.slots * self.frame_bytes / 2**20
            raise OutputError(
                f"frame spool in {tempfile.gettempdir()}",
                f"cannot write ({media.oserror_text(exc)}); it needs up to {need:.0f} MB (set TMPDIR elsewhere)",
            ) from exc
        self.written += done
        self._tags[slot] = i

    def get(self, i: int) -> np.ndarray | None:
        """Frame ``i``, or None when it is not (or no longer) held."""
        slot = i % self.slots
        if self._tags[slot] != i:
            return None
        out = np.empty(self.shape, np.uint8)
        view = out.data.cast("B")
        base = slot * self.frame_bytes
        got = 0
        while got < len(view):
            n = os.preadv(self._file.fileno(), [view[got:]], base + got)
            if n <= 0:
                raise OutputError(f"frame spool in {tempfile.gettempdir()}", "the file came back short")
            got += n
        return out

    def close(self) -> None:
        self._file.close()


def _checksum(image: np.ndarray) -> int:
    """A checksum of every 8th pixel of every 8th row (each 16×16 macroblock is sampled)."""
    return zlib.crc32(np.ascontiguousarray(image[::8, ::8]).data)


class LoopedFrames:
    """The source frame to show at each output time, ping-ponging past the end of the video.

    The first pass decodes in order. With ``spool`` (the output may outlast the video), the
    frames that the loop shows again go to a :class:`FrameSpool` of ``spool_bytes``:

    - a video that fits is spooled whole during the first pass and never decoded again;
    - a longer one keeps its last frames (the start of the backward pass; which frames those
      are comes from ``expect``, the probed duration, else every frame is offered to the
      ring). Later, a forward pass decodes again from the keyframe at or before the frame it
      needs; a backward pass decodes chunks that the spool holds, each from the keyframe at or
      before its first frame (a seek), and shows them in reverse.

    Every frame decoded again is checked against a checksum of the first pass's: a keyframe
    that does not give the same frames (an open GOP) is dropped as an entry point and an
    earlier one is used. Without usable timestamps frames are found by counting from the
    start. Memory holds a few frames at any length; the disk, at most ``spool_bytes``."""

    def __init__(
        self,
        path: Path,
        spool: bool,
        spool_bytes: int = SPOOL_BYTES,
        expect: media.VideoInfo | None = None,
        reader: media.FrameReader | None = None,
        threads: int = 0,
    ) -> None:
        self.path = path
        self._reader = reader if reader is not None else media.FrameReader(path, threads)
        self._first: Iterator[media.Frame] | None = self._reader.frames()
        # per frame of the video, packed (8 + 8 + 4 bytes a frame; Python lists and a dict took
        # about 190: 19 MB an hour of 30 fps input)
        self._times = array("d")
        self._pts = array("q")  # the stream's timestamps (0 where a frame had none)
        self._pts_known = True  # every frame had a timestamp
        self._sums = array("I")
        self._keys: list[int] = []  # indices of the frames decoding can start from
        self._cur: tuple[int, np.ndarray] | None = None  # the first pass's current frame
        self._next: media.Frame | None = None
        self._held: tuple[int, np.ndarray] | None = None  # the frame returned last after the first pass
        self._spool: FrameSpool | None = None
        self._store_from = -math.inf  # first-pass frames at or after this time go to the spool
        self._cursor: Iterator[tuple[int, np.ndarray]] | None = None
        self._cursor_next = 0  # the frame the cursor gives next
        self._index: dict[int, int] | None = None  # pts -> frame where the timestamps do not increase
        self._seekable = False
        self.decoded_again = 0  # frames decoded after the first pass
        try:
            self._pull()
            if self._next is None:
                raise InputError(str(path), "video stream holds no frames")
            self.shape: tuple[int, ...] = self._next.image.shape
            if spool:
                self._spool = FrameSpool(self.shape, spool_bytes)
                if expect is not None and expect.duration > 0 and expect.fps:
                    self._store_from = expect.duration - self._spool.slots / float(expect.fps) - 1.0
                self._offer(0, self._next)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._cursor = None
        self._first = None
        self._reader.close()
        if self._spool is not None:
            if self.decoded_again or self._spool.written:
                logger.info(
                    "frame spool: %d slots of %.1f MB, %.0f MB written; %d frames decoded again",
                    self._spool.slots, self._spool.frame_bytes / 2**20, self._spool.written / 2**20,
                    self.decoded_again,
                )  # fmt: skip
            self._spool.close()
            self._spool = None

    # the first pass

    def _offer(self, i: int, fr: media.Frame) -> None:
        if self._spool is not None and fr.time >= self._store_from:
            self._spool.put(i, fr.image)

    def _pull(self) -> None:
        fr = next(self._first, None) if self._first is not None else None
        if fr is None:
            self._first = None
            self._next = None
            self._finish_first_pass()
            return
        i = len(self._times)
        if i and fr.image.shape != self.shape:
            raise InputError(
                str(self.path), f"the frame size changes at frame {i} ({self.shape[1]}x{self.shape[0]} to "
                f"{fr.image.shape[1]}x{fr.image.shape[0]}): not supported"
            )  # fmt: skip
        self._times.append(fr.time)
        self._pts.append(fr.pts if fr.pts is not None else 0)
        self._pts_known = self._pts_known and fr.pts is not None
        self._sums.append(_checksum(fr.image))
        if fr.key:
            self._keys.append(i)
        if i:
            self._offer(i, fr)
        self._next = fr

    def _finish_first_pass(self) -> None:
        pts = np.frombuffer(self._pts, np.int64)
        increasing = bool(np.all(np.diff(pts) > 0))
        self._seekable = self._pts_known and (increasing or len(np.unique(pts)) == len(pts))
        if self._seekable and not increasing:
            self._index = {int(p): i for i, p in enumerate(pts)}
        n = len(self._times)
        if self._spool is not None and n > self._spool.slots:
            logger.info(
                "the video's %d frames outgrow the frame spool's %d: looping decodes again "
                "(%d keyframes, timestamps %s)",
                n, self._spool.slots, len(self._keys),
                "usable" if self._seekable else "unusable: frames are found by counting from the start",
            )  # fmt: skip

    def at(self, t: float) -> np.ndarray:
        """The frame shown at output time ``t`` (non-decreasing over calls)."""
        while self._next is not None and (self._cur is None or self._next.time <= t + 1e-6):
            self._cur = (len(self._times) - 1, self._next.image)
            self._pull()
        assert self._cur is not None
        if self._next is not None or t <= self._times[-1] + 1e-6:
            return self._cur[1]
        if self._spool is None:  # no spool: hold the last frame
            return self._cur[1]
        period = self._times[-1]
        if period <= 0:
            return self._frame(0, forward=True)
        u = math.fmod(t, 2 * period)
        forward = u <= period
        if not forward:
            u = 2 * period - u
        j = int(np.searchsorted(self._times, u + 1e-6, side="right")) - 1
        return self._frame(max(0, j), forward)

    # after the first pass

    def _frame(self, j: int, forward: bool) -> np.ndarray:
        if self._held is not None and self._held[0] == j:
            return self._held[1]
        if self._cur is not None and self._cur[0] == j:
            image = self._cur[1]
        else:
            assert self._spool is not None
            got = self._spool.get(j)
            image = got if got is not None else self._forward(j) if forward else self._backward(j)
        self._held = (j, image)
        return image

    def _frame_at(self, pts: int | None) -> int:
        """The frame whose timestamp is ``pts`` (-1: none)."""
        if pts is None:
            return -1
        if self._index is not None:
            return self._index.get(pts, -1)
        k = bisect.bisect_left(self._pts, pts)
        return k if k < len(self._pts) and self._pts[k] == pts else -1

    def _entry(self, j: int) -> int:
        """The frame to start decoding at to get frame ``j``: the keyframe at or before it."""
        if not self._seekable:
            return 0
        k = bisect.bisect_right(self._keys, j) - 1
        return self._keys[k] if k >= 0 else 0

    def _start(self, want: int) -> None:
        self._cursor = self._decode_from(want)
        self._cursor_next = want

    def _step(self) -> tuple[int, np.ndarray]:
        assert self._cursor is not None
        i, image = next(self._cursor)
        self._cursor_next = i + 1
        return i, image

    def _forward(self, j: int) -> np.ndarray:
        """Frame ``j`` of a forward pass: the cursor goes on, or starts at ``j``'s keyframe
        when that is nearer; the frames the next backward pass starts with are spooled."""
        assert self._spool is not None
        tail = len(self._times) - self._spool.slots
        if self._cursor is None or self._cursor_next > j or j - self._cursor_next > j - self._entry(j):
            self._start(j)
        while True:
            i, image = self._step()
            if i >= tail:
                self._spool.put(i, image)
            if i == j:
                return image

    def _backward(self, j: int) -> np.ndarray:
        """Frame ``j`` of a backward pass: decode the chunk of frames up to ``j`` that the
        spool holds (starting at a keyframe when one is inside it) and spool it."""
        assert self._spool is not None
        lo = max(0, j - self._spool.slots + 1)
        k = bisect.bisect_left(self._keys, lo) if self._seekable else len(self._keys)
        a = self._keys[k] if k < len(self._keys) and self._keys[k] <= j else lo
        self._start(a)
        while True:
            i, image = self._step()
            self._spool.put(i, image)
            if i == j:
                self._cursor = None  # past j: of no use going backward
                return image

    def _decode_from(self, want: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames ``want``, ``want + 1``, … decoded again from their keyframe, each checked
        against the first pass; a keyframe that gives other frames stops being an entry point."""
        n = len(self._times)
        while want < n:
            entry = self._entry(want)
            from_start = entry == 0
            frames = self._reader.frames(None if from_start else self._pts[entry])
            count = -1
            for fr in frames:
                count += 1
                self.decoded_again += 1
                i = count if from_start else self._frame_at(fr.pts)
                if i < want:  # before the wanted frame (or a leading frame of the keyframe)
                    continue
                if i > want or (not from_start and _checksum(fr.image) != self._sums[i]):
                    break
                yield i, fr.image
                want += 1
                if want >= n:
                    return
            if from_start:  # the file itself gave fewer frames than the first pass
                raise InputError(str(self.path), f"decoding again stops at frame {want} of {n} (did the file change?)")
            logger.warning(
                "decoding from keyframe %d (pts %s) does not give frame %d as the first pass did: "
                "starting earlier",
                entry, self._pts[entry], want,
            )  # fmt: skip
            self._keys.remove(entry)


# --- the dubbed audio's mel -----------------------------------------------------------------


class FileMel:
    """The log-mel of the audio file's 16 kHz mono track (:func:`rtdub.media.audio_chunks`),
    loudness-normalised, computed as the frames ask for it: the same values as
    ``StaticMel(melspectrogram(normalize_loudness(load_audio(path))))`` (up to float rounding;
    both stages are causal, and :meth:`rtdub.audio.StreamingMel.finish` pads the end alike)
    while neither the samples nor the mel of a long track are held whole. Asks go forward:
    frames more than ``keep_frames`` before the newest are dropped (oldest first)."""

    def __init__(self, path: Path, keep_frames: int = 20 * int(audio.MEL_FPS)) -> None:
        self._pieces: Iterator[np.ndarray] | None = media.audio_chunks(path)
        self._gain = audio.LoudnessNormalizer()
        self._mel = audio.StreamingMel(keep_frames)

    @property
    def n_frames(self) -> int:
        return self._mel.n_frames

    def frames(self, start: int, stop: int) -> np.ndarray:
        while self._pieces is not None and self._mel.n_frames < stop:
            piece = next(self._pieces, None)
            if piece is None:
                self._pieces = None
                self._mel.finish()
            else:
                self._mel.push(self._gain.process(piece[0]))
        return self._mel.frames(start, stop)

    def close(self) -> None:
        pieces, self._pieces = self._pieces, None
        if isinstance(pieces, Generator):
            pieces.close()


# --- dubbing --------------------------------------------------------------------------------


def dub_file(opts: DubOptions, progress: Callable[[int, int], None] | None = None) -> DubReport:
    """Dub ``opts.video`` with ``opts.audio`` into ``opts.output``; InputError on bad input."""
    check_paths(opts)
    opts.drive.check()
    info = media.probe_video(opts.video)
    # the audio is read a piece at a time as the frames reach it (the mel, the muxed track):
    # held whole, 10 minutes took 40 MB a copy at 16 kHz mono, 230 MB at 48 kHz stereo
    duration = media.audio_length(opts.audio) / audio.SAMPLE_RATE
    rate = media.audio_sample_rate(opts.audio)
    bundle = opts.engine.load_bundle()
    fps = float(info.fps) if info.fps else 25.0
    n_out = max(1, math.ceil(duration * fps - 1e-9))
    report = DubReport(opts.output, duration=duration, fps=fps)
    report.stage_ms = {k: array("f") for k in ("decode", *STAGES, "encode")}
    spool = duration > info.duration - 0.5 or info.duration <= 0
    decode_threads, encode_threads = codec_threads(info.width, info.height)
    frames = LoopedFrames(opts.video, spool, opts.spool_bytes, info, threads=decode_threads)
    mel = FileMel(opts.audio)

    def track() -> Iterator[np.ndarray]:  # the audio to mux, at its own rate and channels
        return media.audio_chunks(opts.audio, rate, mono=False)

    h, w = frames.shape[:2]
    outside = 0
    t_start = time.perf_counter()
    tracking = TrackerConfig(face=opts.face, recount_every=FACE_RECOUNT_S)
    try:
        with (
            contextlib.ExitStack() as closing,
            FaceTracker(tracking) as tracker,
            media.VideoWriter(
                opts.output, info.fps, w, h, track(), rate, lookahead=encoder_lookahead(w, h), threads=encode_threads
            ) as writer,
        ):
            cmp_writer = None
            if opts.compare is not None:  # aborted by the stack on any error, closed below
                cmp_writer = closing.enter_context(
                    media.VideoWriter(
                        opts.compare,
                        info.fps,
                        2 * w,
                        h,
                        track(),
                        rate,
                        lookahead=encoder_lookahead(2 * w, h),
                        threads=codec_threads(2 * w, h)[1],
                    )
                )
            pipe = build_pipeline(opts.engine, tracker, bundle)
            closing.callback(pipe.close)
            phonetic = None
            if opts.drive.name != "audio":  # phonemes or a text: over the whole 16 kHz track
                phonetic = make_drive(opts.drive, bundle, pipe.audio, media.load_audio(opts.audio), audio.SAMPLE_RATE)
            pipe.set_drive(phonetic)
            report.drive = opts.drive.name if phonetic is not None else "audio"
            for i in range(n_out):
                t = i / fps
                t0 = time.perf_counter()
                src = frames.at(t)
                image = src.copy()
                report.stage_ms["decode"].append((time.perf_counter() - t0) * 1000)
                res = pipe.process(image, t, mel)
                for k, v in res.times.items():
                    report.stage_ms[k].append(v)
                report.frames += 1
                report.faces += int(res.face)
                report.no_face += int(not res.face)
                report.silent += int(res.silent)
                if opts.check_locality:
                    changed = np.any(res.image != src, axis=-1)
                    if res.region is not None:
                        r = res.region
                        hh, ww = r.alpha.shape
                        changed[r.y0 : r.y0 + hh, r.x0 : r.x0 + ww] &= r.alpha <= 0
                    outside += int(changed.sum())
                t1 = time.perf_counter()
                writer.write(res.image)
                if cmp_writer is not None:
                    cmp_writer.write(np.concatenate([src, res.image], axis=1))
                report.stage_ms["encode"].append((time.perf_counter() - t1) * 1000)
                if progress is not None:
                    progress(i + 1, n_out)
            if report.faces == 0:
                raise InputError(str(opts.video), "no face found in any frame")
            if cmp_writer is not None:
                cmp_writer.close()
            report.multi_face, report.most_faces = tracker.multi_face_frames, tracker.most_faces
            if phonetic is not None:
                report.drive_fallback = phonetic.fallback_frames
    finally:
        frames.close()
        mel.close()
    report.wall = time.perf_counter() - t_start
    if opts.check_locality:
        report.pixels_changed_outside_mask = outside
    if report.multi_face:
        logger.warning(
            "%d of %d frames show more than one face (up to %d): the %s was dubbed; "
            "choose another with --face largest|center|INDEX (0 = leftmost)",
            report.multi_face, report.frames, report.most_faces, describe_face(opts.face),
        )  # fmt: skip
    logger.info(
        "dubbed %s: %d frames (%d without a face) in %.1f s", opts.output, report.frames, report.no_face, report.wall,
        extra={"output": str(opts.output), "frames": report.frames, "no_face": report.no_face, "wall_s": report.wall},
    )  # fmt: skip
    return report


def release_freed_frames() -> bool:
    """Have glibc's malloc give allocations of 4 MB and more (decoded frames) their own memory
    maps, returned to the system when freed. By default glibc raises that threshold once such
    a block is freed, so later frames come from the heap, whose freed space the process keeps
    (about 200 MB more at the peak of a 4K dub). Process-wide, so the command line calls it,
    not :func:`dub_file`; False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 4 << 20))  # M_MMAP_THRESHOLD: fixed, so not adjusted any more
    except (OSError, AttributeError):
        return False


def encoder_lookahead(width: int, height: int) -> int | None:
    """x264's rc-lookahead for an output of ``width`` × ``height``: the preset's own (None) up
    to 1080p; above, shrunk in proportion to the frame's area (at least 3), so that the frames
    it holds take about the memory of 1080p's (at 4K: 3 frames, about 150 MB less, for a
    somewhat weaker macroblock-tree rate control)."""
    area = width * height
    if area <= 1920 * 1088:
        return None
    return max(3, LOOKAHEAD_1080P * 1920 * 1080 // area)


def codec_threads(width: int, height: int) -> tuple[int, int]:
    """(decoding, encoding) threads for frames of ``width`` × ``height``: FFmpeg's own count
    (one per core and one more, at most 16) and x264's (1.5 per core), each capped at
    ``THREADS_1080P`` for 1080p and fewer in proportion to a larger frame's area (at least 3).

    Frame threading holds about a frame per thread, so the cores of the machine would otherwise
    set the peak memory: a 4K dub with a 16-core machine's counts (16 and 24) peaked at 1252 MB
    instead of 878 MB with 3 and 3 (120 frames; 4 and 4: 908 MB). On 2 cores nothing changes.
    More threads than the pipeline can use would not make a dub faster: it renders a 4K frame
    in far longer than 3 threads decode or encode one."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    cap = max(3, THREADS_1080P * 1920 * 1080 // max(1, width * height))
    return min(cap, cpus + 1, 16), min(cap, max(1, cpus * 3 // 2))


def describe_face(face: FaceChoice) -> str:
    """``face`` in words: "largest face", "face nearest the centre", "face number 2 from the left"."""
    if face == "largest":
        return "largest face"
    if face == "center":
        return "face nearest the centre"
    return f"face number {face} from the left (0 = leftmost)"
