"""The streaming engine: one :class:`DubSession` per dubbed stream.

    upstream video track ─► (pts → engine clock) ─► VideoRing ─► DubbedVideoTrack.recv()
                                                                   │ FrameScheduler (deadline)
    DubAudioSource ─► DubAudioTimeline (ring + loudness + mel) ────┘
                              └────────────────────────────────► DubbedAudioTrack.recv()

Time: every input is mapped onto the engine clock (``time.monotonic()`` seconds) by its pts
(:class:`~rtdub.stream.rings.PtsClock`). A video frame shown at ``t`` is dubbed with the dubbed
audio at ``t + D`` (``D``: the dub delay, i.e. the translation lag) and released at ``t + D``.
Its deadline is the release time plus the budget. When several frames are due at once only
the newest is rendered and the older ones are dropped as stale, so lateness never piles up.

The output video frames keep the pts and time_base of their input frames. The output audio
track plays dub time ``a`` at clock ``a + L``, where ``L`` follows the median delay with which
video frames leave the engine, so audio and video leave together; ``L`` only moves when the
two drift apart by more than one audio frame (20 ms), and each such step is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..audio import SAMPLE_RATE
from ..drive.phonetic import LOUDNESS_WINDOW_S, PhoneticDrive, bundle_drive, bundle_model
from ..engine import EngineConfig, build_pipeline
from ..exceptions import InputError, ModelError
from ..face.trackahead import AheadTracker
from ..face.tracker import Tracker
from ..render.pipeline import DubPipeline
from .dubaudio import DubAudioTimeline
from .dubsources import ClipSource, DubAudioSource, TtsSource
from .eventfeed import EventFeed, EventFeedConfig
from .frames import to_rgb
from .liveloudness import LiveLoudness
from .rings import PtsClock, VideoRing, pts_seconds
from .scheduler import FrameScheduler, Rendered, SchedulerConfig

logger = logging.getLogger(__name__)

AUDIO_PTIME = 0.02  # s of audio per output frame
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


@dataclass(frozen=True)
class StreamConfig:
    budget_ms: float = 100.0  # per-frame deadline after release; 0 = pass every frame through
    dub_delay_ms: float = 0.0  # translation lag: the video waits this long for its dubbed audio
    video_buffer_s: float = 1.0  # frames held beyond the dub delay before the oldest are dropped
    audio_buffer_s: float = 10.0  # dubbed audio held (the newest seconds)
    # model, backend, threads per stream and the pipeline (EngineConfig.stream(): one thread,
    # bicubic, no fine-detail term, for the frame deadline; rtdub/defaults.py)
    engine: EngineConfig = field(default_factory=EngineConfig.stream)
    track_ahead: bool = True  # track each frame on arrival, on its own thread (rtdub.face.trackahead)
    speculate: bool = True  # with track_ahead: render with predicted landmarks, check after (scheduler)
    direct_tracking: bool = True  # landmark model run directly while tracking (rtdub.face.landmarker)

    @property
    def delay(self) -> float:
        return self.dub_delay_ms / 1000


PipelineFactory = Callable[[], DubPipeline]


def default_pipeline_factory(config: StreamConfig) -> PipelineFactory:
    """A factory that builds a pipeline (tracker, backend) for one stream; call it off the loop."""
    from ..face.tracker import FaceTracker, TrackerConfig

    try:
        bundle = config.engine.load_bundle()  # now, not in the first session's worker thread
    except InputError as exc:
        raise ValueError(f"{exc.path.lstrip('-').replace('-', '_')} {exc.problem}") from exc

    def build() -> DubPipeline:
        face = FaceTracker(TrackerConfig(direct=config.direct_tracking))
        tracker: Tracker = AheadTracker(face) if config.track_ahead else face
        pipe = build_pipeline(config.engine, tracker, bundle)
        warm_up(pipe)
        return pipe

    return build


def warm_up(pipe: DubPipeline) -> None:
    """Run every stage once on dummy input so the first real frame is not late."""
    b = pipe.bundle
    s = b.crop_size
    pipe.backend.audio_to_lip(np.full((1, b.mel_window, 80), -4.0, np.float32), np.zeros((1, 1), np.float32))
    x = np.zeros((1, 3, s, s), np.float32)
    pipe.backend.generate(x, x, np.zeros((1, b.context, b.n_units), np.float32))
    pipe.tracker.track(np.zeros((240, 320, 3), np.uint8), 0.0)
    pipe.reset()


def _rgb(frame: av.VideoFrame) -> Callable[[], np.ndarray]:
    """The frame as RGB, converted when called (on the ahead tracker's thread)."""
    return lambda: to_rgb(frame)


class DubbedVideoTrack(MediaStreamTrack):
    """The dubbed video: pulls frames from the session's ring, returns them dubbed."""

    kind = "video"

    def __init__(self, session: DubSession) -> None:
        super().__init__()
        self._session = session

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            return await self._session._next_video()
        except MediaStreamError:
            self.stop()
            raise


class DubbedAudioTrack(MediaStreamTrack):
    """The dubbed audio, re-timed to leave with the video (20 ms frames, 16 kHz mono s16)."""

    kind = "audio"

    def __init__(self, session: DubSession) -> None:
        super().__init__()
        self._session = session
        self._start: float | None = None
        self._k = 0
        self.skips = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        s = self._session
        clock = s.clock
        if self._start is None:
            self._start = clock()
        target = self._start + self._k * AUDIO_PTIME
        wait = target - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.2:  # the consumer stalled: skip ahead instead of bursting
            behind = int(-wait / AUDIO_PTIME)
            self._k += behind
            self.skips += behind
            target = self._start + self._k * AUDIO_PTIME
        if self.readyState != "live":
            raise MediaStreamError
        n = int(SAMPLE_RATE * AUDIO_PTIME)
        x = s.timeline.read(target - s.output_delay(), n)
        pcm = (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._k * n
        frame.time_base = AUDIO_TIME_BASE
        self._k += 1
        return frame


class DubSession:
    """One dubbed stream. Give it an upstream video track and a dubbed-audio source, then
    ``await start()``; publish ``video`` and ``audio``; ``await aclose()`` when done."""

    def __init__(
        self,
        config: StreamConfig | None = None,
        pipeline_factory: PipelineFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "session",
    ) -> None:
        self.config = config or StreamConfig()
        self.clock = clock
        self.name = name
        self._factory = pipeline_factory or default_pipeline_factory(self.config)
        c = self.config
        self.timeline = DubAudioTimeline(c.audio_buffer_s + c.delay)
        self.ring: VideoRing[av.VideoFrame] = VideoRing(
            max_duration=c.delay + c.video_buffer_s, max_frames=int((c.delay + c.video_buffer_s) * 60) + 8
        )
        self.video = DubbedVideoTrack(self)
        self.audio = DubbedAudioTrack(self)
        self.video_clock = PtsClock()
        self.scheduler: FrameScheduler | None = None
        self.pipeline: DubPipeline | None = None
        self.upstream: MediaStreamTrack | None = None
        self.dub: DubAudioSource | None = None
        self.events_drive: PhoneticDrive | None = None  # lips from phoneme events (a TTS source)
        # events an external TTS sends beside the dubbed audio (attach_events), and the
        # loudness of the dubbed audio their drive reads
        self.events: EventFeed | None = None
        self._loudness: LiveLoudness | None = None
        self._feed_drive: PhoneticDrive | None = None  # the drive the events input moves
        self.input_frames = 0
        self.output_frames = 0
        self.stale = 0
        self.output_delay_steps = 0
        self.last_av_offset_ms = 0.0
        self.last_rendered: Rendered | None = None  # the newest frame's scheduling record
        # called with (input frame, output frame, record) for every frame sent on (tests, tools)
        self.probe: Callable[[av.VideoFrame, av.VideoFrame, Rendered], None] | None = None
        self._delay = 0.02  # s, output delay of the audio track (follows the video)
        self._video_delays: deque[float] = deque(maxlen=25)
        self._delays_seen = 0  # output_frames when output_delay() last looked at the delays
        # release-to-hand-off time (s) of every frame, for benchmarks (bounded: the newest
        # 20000 are kept, older ones dropped); read through video_latencies()
        self._video_delays_all: deque[float] = deque(maxlen=20000)
        self._released: dict[int, float] = {}  # output frame id -> release time (at most 2 held)
        self._out_times: deque[float] = deque(maxlen=100)
        self._last_pts: int | None = None
        self._wake = asyncio.Event()
        self._input_ended = False
        self._input_task: asyncio.Task[None] | None = None
        self._producer: asyncio.Task[None] | None = None
        self._ready: deque[tuple[av.VideoFrame, float, Rendered]] = deque(maxlen=1)  # drop policy: oldest
        self._produced = asyncio.Event()
        self._taken = asyncio.Event()
        self._last_take = 0.0
        self._output_ended = False
        self.unsent = 0
        self._dub_started = False
        self._closed = False
        self._started = False

    # --- wiring -------------------------------------------------------------------------

    def set_video(self, track: MediaStreamTrack) -> None:
        self.upstream = track

    def set_dub(self, source: DubAudioSource) -> None:
        self.dub = source

    def write_dub(self, t: float, samples: np.ndarray) -> None:
        """Sink of the dub source: shift synchronous sources by the dub delay."""
        if self.dub is not None and self.dub.synchronous:
            t += self.config.delay
        self.timeline.write(t, samples)
        if self.events is not None:
            self.events.note_audio(t, int(np.size(samples)))
            if self._loudness is not None:
                self._loudness.note(samples)

    def attach_events(self, config: EventFeedConfig | None = None) -> EventFeed:
        """The session's input of timed phoneme or viseme events from an external TTS
        (rtdub/stream/eventfeed.py), created on the first call; once the pipeline is built the
        lips follow them where they reach, and the audio drive elsewhere. Call it before the
        dubbed audio starts, so every sample is counted on the events' clock."""
        if self.events is None:
            self.events = EventFeed(config, self.clock, name=self.name)
            self._loudness = LiveLoudness(self.config.audio_buffer_s)
            if self.pipeline is not None:
                self._drive_from_feed(self.pipeline)
        return self.events

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self.pipeline = await loop.run_in_executor(None, self._factory)
        sc = SchedulerConfig(
            budget_ms=self.config.budget_ms,
            lookahead_ms=self.config.engine.lookahead_ms,
            speculate=self.config.speculate,
        )
        self.scheduler = FrameScheduler(self.pipeline, self.timeline, sc, self.clock)
        if self.events is not None:
            self._drive_from_feed(self.pipeline)
        if self.dub is not None and not (isinstance(self.dub, ClipSource) and self.dub.start_time is None):
            await self._start_dub()
        if self.upstream is not None:
            self._input_task = asyncio.create_task(self._pump_video(), name=f"rtdub-input-{self.name}")
        logger.info("session started", extra={"session": self.name, "dub": getattr(self.dub, "name", None)})

    async def _start_dub(self, at: float | None = None) -> None:
        if self.dub is None or self._dub_started:
            return
        self._dub_started = True
        if isinstance(self.dub, ClipSource) and self.dub.start_time is None:
            self.dub.start_time = at
        await self.dub.start(self.write_dub, self.clock)
        if isinstance(self.dub, TtsSource) and self.pipeline is not None:
            self._drive_from_events(self.pipeline, self.dub)

    def _drive_from_events(self, pipe: DubPipeline, source: TtsSource) -> None:
        """Move the lips from the TTS's own phoneme events (the audio drive where they end)."""
        try:
            drive = bundle_drive(
                pipe.bundle, source.timeline(), pipe.audio, source.speech.samples, SAMPLE_RATE, source.start_time or 0.0
            )
        except ModelError as exc:  # a bundle without a phonetic model: the audio drive, as before
            logger.info("lips from the audio: %s", exc, extra={"session": self.name})
            return
        pipe.set_drive(drive)
        self.events_drive = drive
        self._feed_drive = None  # the TTS's own events win over an events input (which only counts)
        logger.info(
            "lips from the TTS events: %d events over %.2f s",
            len(drive.timeline.starts),
            drive.timeline.span[1] - drive.timeline.span[0],
            extra={"session": self.name, "events": len(drive.timeline.starts)},
        )

    def _drive_from_feed(self, pipe: DubPipeline) -> None:
        """Move the lips from the events input, starting on the audio drive until events come
        (a TTS source's own events take precedence: the input then only counts)."""
        if self.events_drive is not None or self.events is None:
            return
        try:
            model = bundle_model(pipe.bundle)
        except ModelError as exc:
            logger.info("lips from the audio, events only counted: %s", exc, extra={"session": self.name})
            return
        drive = PhoneticDrive(
            model, self.events.timeline.snapshot(), pipe.audio, self._loudness, covered_until=-np.inf,
            gaps_fall_back=True, start_on_audio=True,
        )  # fmt: skip
        pipe.set_drive(drive)
        self.events_drive = self._feed_drive = drive
        logger.info("lips from the events input where it reaches", extra={"session": self.name})

    def _events_at(self, t: float) -> None:
        """Before the frame at ``t`` renders (on the loop, so the worker never sees a change
        mid-frame): the events input's timeline and loudness for it."""
        drive, feed = self._feed_drive, self.events
        if drive is None or feed is None:
            return
        tl = feed.at(t)
        if tl is not None:
            drive.timeline = tl
            drive.covered_until = tl.span[1] if len(tl.starts) else -np.inf
        if self._loudness is not None:
            w = LOUDNESS_WINDOW_S
            self._loudness.measure(self.timeline.read(t - w / 2, int(w * SAMPLE_RATE)))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.video.stop()
        self.audio.stop()
        self._wake.set()
        for task in (self._input_task, self._producer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.dub is not None:
            await self.dub.aclose()
        if self.scheduler is not None:
            await self.scheduler.aclose()
        if self.pipeline is not None:
            pipe = self.pipeline
            await asyncio.get_running_loop().run_in_executor(None, self._close_pipeline, pipe)
        self.ring.clear()
        logger.info("session closed", extra={"session": self.name, "frames": self.output_frames})

    @staticmethod
    def _close_pipeline(pipe: DubPipeline) -> None:
        pipe.tracker.close()
        pipe.close()

    # --- video path ---------------------------------------------------------------------

    async def _pump_video(self) -> None:
        assert self.upstream is not None
        try:
            while True:
                frame = await self.upstream.recv()
                if not isinstance(frame, av.VideoFrame):
                    continue
                arrival = self.clock()
                if frame.pts is None or frame.time_base is None:
                    t = arrival
                else:
                    t = self.video_clock.map(pts_seconds(frame.pts, frame.time_base), arrival)
                if not self._dub_started:
                    await self._start_dub(at=t)
                self.input_frames += 1
                self.ring.push(t, frame, arrival)
                ahead = self._ahead()
                if ahead is not None and frame.format.name == "yuv420p" and frame.width % 2 == frame.height % 2 == 0:
                    ahead.submit(_rgb(frame), t + self.config.delay)
                self._wake.set()
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("video input failed", extra={"session": self.name})
        finally:
            self._input_ended = True
            self._wake.set()

    def _ahead(self) -> AheadTracker | None:
        """The pipeline's ahead tracker, when frames are rendered at all (budget > 0)."""
        if self.config.budget_ms <= 0 or self.pipeline is None:
            return None
        tracker = self.pipeline.tracker
        return tracker if isinstance(tracker, AheadTracker) else None

    async def _render_next(self) -> tuple[av.VideoFrame, float, Rendered]:
        """Wait for the next due frame (newest first, older due ones are stale) and render it."""
        d = self.config.delay
        while True:
            if self._closed:
                raise MediaStreamError
            item = self.ring.oldest()
            if item is None:
                if self._input_ended:
                    raise MediaStreamError
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = item.t + d - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            taken, stale = self.ring.pop_through(self.clock() - d)
            if taken is None:
                continue
            self.stale += stale
            break
        assert self.scheduler is not None
        self._events_at(taken.t + d)
        release = max(taken.t + d, taken.arrival)
        deadline = release + self.config.budget_ms / 1000
        r = await self.scheduler.render(taken.item, taken.t + d, deadline)
        out = r.frame
        out.pts, out.time_base = taken.item.pts, taken.item.time_base
        if self.probe is not None:
            self.probe(taken.item, out, r)
        self._released[id(out)] = release
        return out, taken.t + d, r

    async def _produce(self) -> None:
        """Render ahead of the consumer, so rendering overlaps the encoding of the previous
        frame. The hand-off slot holds one frame: an unsent frame is replaced by a newer one
        and counted (``unsent``). With no consumer for a second, rendering pauses."""
        try:
            while True:
                if self._ready and self.clock() - self._last_take > 1.0:
                    self._taken.clear()
                    await self._taken.wait()
                item = await self._render_next()
                if self._ready:
                    self.unsent += 1
                    self._released.pop(id(self._ready[0][0]), None)
                self._ready.append(item)
                self._produced.set()
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("video rendering failed", extra={"session": self.name})
        finally:
            self._output_ended = True
            self._produced.set()

    async def _next_video(self) -> av.VideoFrame:
        if self._producer is None:
            if self._closed:
                raise MediaStreamError
            self._last_take = self.clock()
            self._producer = asyncio.create_task(self._produce(), name=f"rtdub-render-{self.name}")
        while not self._ready:
            if self._output_ended or self._closed:
                raise MediaStreamError
            self._produced.clear()
            await self._produced.wait()
        out, t_dub, r = self._ready.popleft()
        now = self._last_take = self.clock()
        self._taken.set()
        self.last_rendered = r
        delay = now - t_dub
        self._video_delays.append(delay)
        self._video_delays_all.append(now - self._released.pop(id(out), now))
        self.last_av_offset_ms = (delay - self._delay) * 1000
        self._out_times.append(now)
        self.output_frames += 1
        self._last_pts = out.pts
        return out

    def output_delay(self) -> float:
        """The audio track's output delay: the median video delay, moved in 20 ms steps
        (re-evaluated only when a video frame has left since the last call)."""
        if self._video_delays and self._delays_seen != self.output_frames:
            self._delays_seen = self.output_frames
            med = statistics.median(self._video_delays)
            if abs(med - self._delay) > AUDIO_PTIME:
                self._delay = max(0.0, med)
                self.output_delay_steps += 1
        return self._delay

    # --- stats --------------------------------------------------------------------------

    def video_latencies(self) -> list[float]:
        """The release-to-hand-off time (s) of the newest frames sent on (at most 20000), in
        order: how long each frame spent in the engine after its release."""
        return list(self._video_delays_all)

    def output_fps(self) -> float:
        q = self._out_times
        if len(q) < 2 or q[-1] <= q[0]:
            return 0.0
        return (len(q) - 1) / (q[-1] - q[0])

    def _drive_stats(self) -> dict[str, Any]:
        """Which drive moves the lips; with phoneme events, the frames that used the audio
        drive instead (events late, missing or over) and the fade between them."""
        d = self.events_drive
        feed = {"input": self.events.stats()} if self.events is not None else {}
        if d is None:
            return {"name": "audio"} | feed
        return {
            "name": "events",
            "frames": d.frames,
            "event_frames": d.frames - d.fallback_frames,
            "audio_fallback_frames": d.fallback_frames,
        } | feed

    def stats(self) -> dict[str, Any]:
        sched = self.scheduler.stats.as_dict() if self.scheduler is not None else {}
        delays = np.fromiter(self._video_delays, np.float64) * 1000 if self._video_delays else np.zeros(1)
        return {
            "name": self.name,
            "dub_source": getattr(self.dub, "name", None),
            "drive": self._drive_stats(),
            "input_frames": self.input_frames,
            "output_frames": self.output_frames,
            "output_fps": round(self.output_fps(), 2),
            "late_frames": sched.get("late", 0),
            "dropped_frames": {
                "stale": self.stale,
                "unsent": self.unsent,
                "ring_overflow": self.ring.dropped_overflow,
                "out_of_order": self.ring.dropped_out_of_order,
            },
            "scheduler": sched,
            "estimates_ms": self.scheduler.estimates() if self.scheduler is not None else {},
            "video_delay_ms": {"p50": round(float(np.median(delays)), 2), "max": round(float(delays.max()), 2)},
            "audio_output_delay_ms": round(self._delay * 1000, 2),
            "av_offset_ms": round(self.last_av_offset_ms, 2),
            "audio_output_delay_steps": self.output_delay_steps,
            "audio": {
                "written_until": self.timeline.end_time,
                "chunks": self.timeline.chunks,
                "gap_samples": self.timeline.ring.gap_samples,
                "dropped_overlap": self.timeline.ring.dropped_overlap,
                "dropped_overflow": self.timeline.ring.dropped_overflow,
                "restarts": self.timeline.restarts,
                "output_skips": self.audio.skips,
            },
            "track_ahead": ahead.stats() if (ahead := self._ahead()) is not None else None,
            "clock": {"video_reanchors": self.video_clock.reanchors, "video_corrections": self.video_clock.corrections},
        }
