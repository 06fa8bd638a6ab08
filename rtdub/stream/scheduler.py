"""Per-frame deadline scheduling of the dubbing pipeline.

Each frame comes with a deadline on the engine clock (its release time plus the budget,
``--budget-ms``). The scheduler picks the best rendering mode whose expected cost still
fits before the deadline, degrading step by step:

    FULL ─► REUSE_LANDMARKS ─► SKIP_GENERATOR ─► PASSTHROUGH

(reuse the previous frame's landmarks; then also reuse the previous generated mouth; then
return the frame untouched). Every degraded frame is counted by mode, every frame that ends
after its deadline is counted as late. Costs are running estimates of the measured wall time
of each mode; estimates of modes not run lately relax towards zero, so a mode is tried again
once the machine has recovered.

The pipeline runs on a single-thread executor owned by the scheduler (one per stream: the
pipeline and its backend are stateful and not thread-safe); onnxruntime and OpenCV release
the GIL, so the event loop keeps running meanwhile. The scheduler never queues: the caller
hands it one frame at a time and drops stale frames itself (see ``streaming.py``).

Lookahead (docs/design.md §3): the lip stage gets whatever future dubbed audio is already buffered,
up to the configured lookahead, without waiting for more. Audio that is not there is silence.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from ..defaults import DEFAULT_LOOKAHEAD_MS
from ..face.align import RIGID_IDX
from ..face.trackahead import AheadTracker
from ..face.tracker import FaceObservation
from ..render.blend import PasteRegion
from ..render.pipeline import STAGES, DubPipeline, Shortcuts
from .dubaudio import DubAudioTimeline, MelSnapshot
from .frames import to_rgb, with_region

logger = logging.getLogger(__name__)


class Mode(enum.IntEnum):
    FULL = 0
    REUSE_LANDMARKS = 1
    SKIP_GENERATOR = 2
    PASSTHROUGH = 3


@dataclass(frozen=True)
class SchedulerConfig:
    budget_ms: float = 100.0
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS
    margin_ms: float = 5.0  # kept free before the deadline (encode, event-loop hand-off)
    alpha: float = 0.3  # weight of a new measurement in a mode's cost estimate
    relax: float = 0.98  # per frame, estimates of modes that did not run decay by this factor
    # speculative alignment (with an AheadTracker): render with landmarks extrapolated from the
    # last two tracked frames while this frame is tracked in parallel, then check them
    speculate: bool = True
    speculate_tolerance: float = 0.015  # mean alignment-point error, in face sizes, kept
    speculate_max_gap_s: float = 0.1  # only extrapolate over gaps up to this


@dataclass(frozen=True)
class Rendered:
    """One scheduled frame. ``frame`` is a new frame, or the input itself when passed through."""

    frame: Any  # av.VideoFrame or np.ndarray, the same type as the input
    mode: Mode
    face: bool
    silent: bool
    late: bool
    lookahead: float  # s of future dubbed audio the lip stage used
    wall_ms: float  # time from the call to the result
    times: dict[str, float]
    units: np.ndarray | None = None
    region: PasteRegion | None = None  # where the frame was changed (None: nowhere)


class Timings:
    """Rolling per-stage timings (bounded: the newest ``keep`` values of each stage)."""

    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self._v: dict[str, deque[float]] = {}

    def add(self, name: str, ms: float) -> None:
        q = self._v.get(name)
        if q is None:
            q = self._v[name] = deque(maxlen=self.keep)
        q.append(float(ms))

    def percentiles(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for k, q in self._v.items():
            if q:
                a = np.fromiter(q, np.float64)
                p50, p95, p99 = np.percentile(a, [50, 95, 99])
                out[k] = {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}
        return out


@dataclass
class SchedulerStats:
    frames: int = 0
    late: int = 0
    by_mode: dict[str, int] = field(default_factory=lambda: {m.name.lower(): 0 for m in Mode})
    faces: int = 0
    silent: int = 0
    timings: Timings = field(default_factory=Timings)
    speculation: dict[str, int] = field(default_factory=lambda: {"kept": 0, "redone": 0, "lost": 0})

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "late": self.late,
            "modes": dict(self.by_mode),
            "faces": self.faces,
            "silent": self.silent,
            "speculation": dict(self.speculation),
            "stages_ms": self.timings.percentiles(),
        }


class FrameScheduler:
    """Runs one stream's pipeline under per-frame deadlines. Lifecycle: ``aclose()``."""

    def __init__(
        self,
        pipeline: DubPipeline,
        audio: DubAudioTimeline,
        config: SchedulerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.audio = audio
        self.config = config or SchedulerConfig()
        self.clock = clock
        self.stats = SchedulerStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtdub-pipeline")
        self._est = {m: 0.0 for m in (Mode.FULL, Mode.REUSE_LANDMARKS, Mode.SKIP_GENERATOR)}
        self._have_landmarks = False
        self._have_face = False
        self._history: deque[tuple[float, FaceObservation]] = deque(maxlen=2)  # tracked frames
        self._size: tuple[int, int] | None = None
        self._closed = False

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def estimates(self) -> dict[str, float]:
        return {m.name.lower(): round(v, 2) for m, v in self._est.items()}

    def choose(self, remaining_ms: float) -> Mode:
        """The best mode expected to finish within ``remaining_ms``."""
        room = remaining_ms - self.config.margin_ms
        for mode in (Mode.FULL, Mode.REUSE_LANDMARKS, Mode.SKIP_GENERATOR):
            if mode >= Mode.REUSE_LANDMARKS and not self._have_landmarks:
                break  # nothing to reuse: a degraded mode would cost a full frame
            if mode == Mode.SKIP_GENERATOR and not self._have_face:
                break
            if self._est[mode] <= room:
                return mode
        return Mode.PASSTHROUGH

    async def render(self, frame: Any, t: float, deadline: float) -> Rendered:
        """Dub ``frame`` (av.VideoFrame or RGB ndarray) shown at dub-clock time ``t``; try to
        finish by ``deadline`` (engine clock)."""
        if self._closed:
            raise RuntimeError("scheduler is closed")
        start = self.clock()
        mode = self.choose((deadline - start) * 1000)
        st = self.stats
        st.frames += 1
        st.by_mode[mode.name.lower()] += 1
        for m in self._est:
            if m != mode:
                self._est[m] *= self.config.relax
        if mode == Mode.PASSTHROUGH:
            late = start > deadline
            st.late += int(late)
            return Rendered(frame, mode, False, False, late, 0.0, (self.clock() - start) * 1000, {})
        cfg = self.config
        la = self.audio.available_lookahead(t, cfg.lookahead_ms / 1000)
        snap = self.audio.snapshot(t, la, self.pipeline.bundle.mel_window)
        loop = asyncio.get_running_loop()
        out, face, silent, times, units, region = await loop.run_in_executor(
            self._executor, self._work, frame, t, snap, la, mode
        )
        end = self.clock()
        wall = (end - start) * 1000
        self._est[mode] = wall if self._est[mode] == 0 else (1 - cfg.alpha) * self._est[mode] + cfg.alpha * wall
        late = end > deadline
        st.late += int(late)
        st.faces += int(face)
        st.silent += int(silent)
        for k, v in times.items():
            st.timings.add(k, v)
        st.timings.add("frame", wall)
        if late:
            logger.warning(
                "frame late",
                extra={"t": t, "mode": mode.name, "late_ms": (end - deadline) * 1000, "wall_ms": wall},
            )
        return Rendered(out, mode, face, silent, late, la, wall, times, units, region)

    def _work(
        self, frame: Any, t: float, snap: MelSnapshot, la: float, mode: Mode
    ) -> tuple[Any, bool, bool, dict[str, float], np.ndarray, PasteRegion | None]:
        """Worker thread: convert, run the pipeline, convert back."""
        t0 = time.perf_counter()
        is_av = isinstance(frame, av.VideoFrame)
        image = to_rgb(frame) if is_av else frame
        size = (image.shape[1], image.shape[0])
        if self._size is not None and size != self._size:
            logger.info("resolution changed; tracking restarts", extra={"from": self._size, "to": size})
            self.pipeline.reset()
            self._history.clear()
            self._have_landmarks = self._have_face = False
            mode = Mode.FULL
        self._size = size
        times: dict[str, float] = {"convert": (time.perf_counter() - t0) * 1000}
        units, silent = self.pipeline.drive.units_at(snap, t, times, lookahead=la)
        predicted = self._predict(t) if mode == Mode.FULL else None
        if predicted is not None:
            # the frame before the paste, needed only when the prediction fails: decoded again
            # from the video frame then; an RGB input (modified in place) is copied
            if is_av:
                pristine: Callable[[], np.ndarray] = lambda: to_rgb(frame)  # noqa: E731
            else:
                kept = image.copy()
                pristine = lambda: kept  # noqa: E731
            image, face, region = self._speculate(image, t, units, predicted, times, pristine)
        else:
            shortcuts = Shortcuts(
                reuse_landmarks=mode >= Mode.REUSE_LANDMARKS and self._have_landmarks,
                skip_generator=mode >= Mode.SKIP_GENERATOR and self._have_face,
            )
            res = self.pipeline.process(image, t, units=units, shortcuts=shortcuts)
            times.update(res.times)
            face, region = res.face, res.region
            self._remember(t, self.pipeline.last_observation if mode == Mode.FULL else None)
        self._have_landmarks = face
        self._have_face = self._have_face or face
        out: Any
        if is_av:
            t1 = time.perf_counter()
            out = with_region(frame, image, region, changed=face)
            times["convert"] += (time.perf_counter() - t1) * 1000
        else:
            out = image
        return out, face, silent, times, units, region

    # --- speculative alignment ----------------------------------------------------------

    def _remember(self, t: float, obs: FaceObservation | None) -> None:
        """Record the tracked landmarks of the frame at ``t`` (None: no face, or not tracked)."""
        if obs is None:
            self._history.clear()
        else:
            self._history.append((t, obs))

    def _predict(self, t: float) -> FaceObservation | None:
        """The landmarks at ``t`` extrapolated from the last two tracked frames (constant
        velocity), when tracking runs ahead on its own thread and both are recent."""
        if not self.config.speculate or not isinstance(self.pipeline.tracker, AheadTracker):
            return None
        if len(self._history) < 2:
            return None
        (t1, o1), (t2, o2) = self._history
        gap = self.config.speculate_max_gap_s
        if not (0 < t2 - t1 <= gap and 0 < t - t2 <= gap):
            return None
        pts = o2.landmarks + (o2.landmarks - o1.landmarks) * ((t - t2) / (t2 - t1))
        return FaceObservation(pts, pts, o2.face_size, o2.via_roi)

    def _speculate(
        self,
        image: np.ndarray,
        t: float,
        units: np.ndarray,
        predicted: FaceObservation,
        times: dict[str, float],
        pristine: Callable[[], np.ndarray],
    ) -> tuple[np.ndarray, bool, PasteRegion | None]:
        """Render with the predicted landmarks while the ahead tracker tracks this frame on
        its own thread; then check the prediction against the tracked landmarks. Within
        ``speculate_tolerance`` (mean error of the alignment points, in face sizes) the render
        stands; beyond it the frame (``pristine()``: as before the paste) is rendered again
        with the tracked landmarks; with no face it is returned unchanged."""
        pipe = self.pipeline
        tracker = pipe.tracker
        assert isinstance(tracker, AheadTracker)  # _predict speculates only with one
        res = pipe.process(image, t, units=units, shortcuts=Shortcuts(landmarks=predicted))
        times.update(res.times)
        tw = time.perf_counter()
        actual = tracker.track(pristine, t)  # usually ready: submitted on the frame's arrival
        times["track"] = (time.perf_counter() - tw) * 1000
        self._remember(t, actual)
        pipe.set_observation(actual)
        st = self.stats.speculation
        if actual is None:  # the face is gone: never paste a mouth where there is no face
            st["lost"] += 1
            return pristine(), False, None
        err = float(np.abs(actual.landmarks[RIGID_IDX] - predicted.landmarks[RIGID_IDX]).mean()) / actual.face_size
        if err <= self.config.speculate_tolerance:
            st["kept"] += 1
            return image, res.face, res.region
        st["redone"] += 1
        image = pristine()
        res = pipe.process(image, t, units=units, shortcuts=Shortcuts(landmarks=actual))  # units replaced
        for k, v in res.times.items():
            times[k] = times.get(k, 0.0) + v
        return image, res.face, res.region

    async def aclose(self) -> None:
        """Wait for the frame in flight (if any), then release the worker thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)


__all__ = [
    "STAGES",
    "FrameScheduler",
    "Mode",
    "Rendered",
    "SchedulerConfig",
    "SchedulerStats",
    "Timings",
]
