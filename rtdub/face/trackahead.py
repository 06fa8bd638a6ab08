"""Tracking ahead: landmarks computed on a frame's arrival, before it is rendered.

The pipeline's stages run one after the other on one worker thread: track, align, generate,
blend. Tracking (mediapipe, ~7 ms on this machine) does not depend on the previous frame's
rendering, so :class:`AheadTracker` starts it on its own thread as soon as a frame arrives
(:meth:`submit`), while the worker is still rendering the frame before. When the worker gets
to that frame, :meth:`track` returns the result already computed (or waits for it), so the
render path of a frame is shortened by its tracking time and consecutive frames overlap.

It has the :class:`~rtdub.face.tracker.FaceTracker` interface (``track``, ``reset``, ``close``).
Every call into the inner tracker runs on its one thread, in order, so the tracker's state
(mediapipe's video mode, the One-Euro filter) sees frames in time order. Frames whose
tracking was not submitted are tracked on demand on the same thread.

Bounded: at most ``max_pending`` frames wait for tracking (drop policy: when a new frame
arrives and the queue is full, the oldest queued frame that has not started is cancelled and
counted in ``cancelled``; it is then tracked on demand if it is ever rendered); at most
``keep`` results are held (drop policy: oldest first, counted in ``expired``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

import numpy as np

from .tracker import FaceObservation, Tracker

logger = logging.getLogger(__name__)


class AheadTracker:
    """A :class:`~rtdub.face.tracker.Tracker` whose work can start before the frame is rendered
    (:meth:`submit`); :meth:`track` also takes the frame as a callable, converted on the
    tracker's thread."""

    def __init__(self, inner: Tracker, max_pending: int = 3, keep: int = 16) -> None:
        self.inner = inner
        self.max_pending = max_pending
        self.keep = keep
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtdub-track")
        self._lock = threading.Lock()
        self._results: OrderedDict[float, Future[FaceObservation | None]] = OrderedDict()
        self._closed = False
        self.submitted = 0
        self.hits = 0  # track() calls answered by a submitted frame
        self.misses = 0  # track() calls tracked on demand
        self.cancelled = 0
        self.expired = 0
        self.busy_ms = 0.0  # time spent tracking on the tracker thread

    def _run(self, image: Callable[[], np.ndarray] | np.ndarray, t: float) -> FaceObservation | None:
        t0 = time.perf_counter()
        try:
            return self.inner.track(image() if callable(image) else image, t)
        finally:
            self.busy_ms += (time.perf_counter() - t0) * 1000

    def submit(self, image: Callable[[], np.ndarray] | np.ndarray, t: float) -> None:
        """Start tracking the frame shown at ``t`` (an RGB image, or a callable giving one on
        the tracker thread, e.g. a decoded frame's conversion). Call from one thread."""
        if self._closed:
            return
        with self._lock:
            pending = [f for f in self._results.values() if not f.done() and not f.running()]
            if len(pending) >= self.max_pending and pending[0].cancel():
                self.cancelled += 1
            self._results[t] = self._executor.submit(self._run, image, t)
            self.submitted += 1
            while len(self._results) > self.keep:
                self._results.popitem(last=False)
                self.expired += 1

    def track(self, image: Callable[[], np.ndarray] | np.ndarray, t: float) -> FaceObservation | None:
        """The observation of the frame at ``t``: the submitted result, else tracked now
        (``image`` may be a callable, called only then)."""
        with self._lock:
            fut = self._results.pop(t, None)
            # results older than t will never be asked for (frames are rendered in order)
            for old in [k for k in self._results if k < t]:
                self._results.pop(old).cancel()
        if fut is not None:
            try:
                obs = fut.result()
                self.hits += 1
                return obs
            except CancelledError:
                pass
        self.misses += 1
        return self._executor.submit(self._run, image, t).result()

    def reset(self) -> None:
        """Forget the pending frames and reset the inner tracker (on its thread, in order)."""
        with self._lock:
            for f in self._results.values():
                f.cancel()
            self._results.clear()
        if not self._closed:
            self._executor.submit(self.inner.reset).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for f in self._results.values():
                f.cancel()
            self._results.clear()
        self._executor.shutdown(wait=True)
        self.inner.close()

    def stats(self) -> dict[str, float]:
        return {
            "submitted": self.submitted,
            "hits": self.hits,
            "misses": self.misses,
            "cancelled": self.cancelled,
            "expired": self.expired,
            "busy_ms": round(self.busy_ms, 1),
            "direct": int(getattr(self.inner, "direct_frames", 0)),  # tracked by the model run directly
        }
