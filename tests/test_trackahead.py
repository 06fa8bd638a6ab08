"""The ahead tracker: same observations as tracking in the render thread, bounded queue."""

from __future__ import annotations

import threading

import numpy as np

from rtdub.face.trackahead import AheadTracker
from rtdub.face.tracker import FaceObservation

from .streamkit import portrait_frames


class RecordingTracker:
    """A fake FaceTracker: returns the mean of the image as a landmark, records call order
    and the thread of every call; ``gate`` can hold tracking back."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.threads: set[str] = set()
        self.resets = 0
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()
        self.config = None

    def track(self, image: np.ndarray, t: float) -> FaceObservation | None:
        self.gate.wait(5)
        self.calls.append(t)
        self.threads.add(threading.current_thread().name)
        pts = np.full((468, 2), float(image.mean()))
        return FaceObservation(pts, pts, 1.0, False)

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def test_submitted_frames_are_answered_in_order_on_one_thread() -> None:
    inner = RecordingTracker()
    ahead = AheadTracker(inner)  # type: ignore[arg-type]
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(6)]
    for i, f in enumerate(frames[:3]):
        ahead.submit(lambda f=f: f, i / 25)
    got = [ahead.track(frames[i], i / 25) for i in range(3)]
    assert [o.landmarks[0, 0] for o in got if o is not None] == [0.0, 1.0, 2.0]
    assert ahead.hits == 3 and ahead.misses == 0
    # a frame that was never submitted is tracked on demand, on the same thread, in order
    obs = ahead.track(frames[4], 4 / 25)
    assert obs is not None and obs.landmarks[0, 0] == 4.0
    assert ahead.misses == 1
    assert inner.calls == [0.0, 1 / 25, 2 / 25, 4 / 25]
    assert len(inner.threads) == 1 and threading.current_thread().name not in inner.threads
    ahead.reset()
    assert inner.resets == 1
    ahead.close()
    assert inner.closed


def test_queue_is_bounded_oldest_unstarted_frame_is_cancelled() -> None:
    inner = RecordingTracker()
    inner.gate.clear()  # the tracker thread blocks on the first frame
    ahead = AheadTracker(inner, max_pending=2, keep=4)  # type: ignore[arg-type]
    img = np.zeros((8, 8, 3), np.uint8)
    for i in range(8):
        ahead.submit(img, float(i))
    assert ahead.submitted == 8
    assert ahead.cancelled >= 5  # frame 0 runs; at most 2 wait at a time
    assert ahead.expired == 4  # only the newest 4 results are held
    inner.gate.set()
    obs = ahead.track(img, 7.0)
    assert obs is not None
    assert 7.0 in inner.calls and len(inner.calls) <= 4  # cancelled frames were never tracked
    ahead.close()


def test_real_tracker_gives_the_same_landmarks_ahead_and_inline() -> None:
    from rtdub.face.tracker import FaceTracker

    frames = portrait_frames()[:8]
    inline = FaceTracker()
    ahead = AheadTracker(FaceTracker(), max_pending=len(frames))  # no frame cancelled
    try:
        for i, f in enumerate(frames):
            ahead.submit(f.copy(), i / 25)
        for i, f in enumerate(frames):
            a = inline.track(f, i / 25)
            b = ahead.track(f, i / 25)
            assert a is not None and b is not None
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-6)
        assert ahead.hits == len(frames)
    finally:
        inline.close()
        ahead.close()
