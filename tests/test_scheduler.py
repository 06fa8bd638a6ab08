"""The deadline scheduler: degradation under a slow backend, pass-through, lookahead."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rtdub.stream.dubaudio import DubAudioTimeline
from rtdub.stream.scheduler import FrameScheduler, Mode, SchedulerConfig

from .factories import speechlike
from .fakes import SlowBackend
from .streamkit import bundle, make_pipeline, onnx_backend, portrait_frames


@pytest.fixture()
def timeline() -> DubAudioTimeline:
    tl = DubAudioTimeline()
    tl.write(0.0, speechlike(3.0) * 3)
    return tl


async def test_degrades_step_by_step_under_a_slow_generator(timeline: DubAudioTimeline) -> None:
    slow = SlowBackend(onnx_backend(), generate_s=0.15)
    pipe = make_pipeline(slow)
    sched = FrameScheduler(pipe, timeline, SchedulerConfig(budget_ms=100))
    try:
        results = []
        for i, f in enumerate(portrait_frames()[:30]):
            r = await sched.render(f.copy(), i / 25, time.monotonic() + 0.1)
            results.append(r)
    finally:
        await sched.aclose()
        pipe.tracker.close()
    modes = [r.mode for r in results]
    # the first frame runs in full and is late; then reuse landmarks (still late: the
    # generator is the slow part); then skip the generator, which fits
    assert modes[:3] == [Mode.FULL, Mode.REUSE_LANDMARKS, Mode.SKIP_GENERATOR]
    assert results[0].late and results[1].late
    assert modes.count(Mode.SKIP_GENERATOR) >= 24
    skipped = [r for r in results if r.mode == Mode.SKIP_GENERATOR]
    assert not any(r.late for r in skipped)
    assert all(r.wall_ms < 100 for r in skipped) and all(r.face for r in skipped)
    st = sched.stats
    assert st.frames == 30 and st.late == sum(r.late for r in results) <= 4
    assert st.by_mode["skip_generator"] == modes.count(Mode.SKIP_GENERATOR)
    assert slow.generate_calls == 1 + sum(m in (Mode.FULL, Mode.REUSE_LANDMARKS) for m in modes)
    # skipped frames still change the mouth: the last generated face is pasted again
    f = portrait_frames()[29]
    assert np.any(results[-1].frame != f)


async def test_no_time_left_passes_the_frame_through_untouched(timeline: DubAudioTimeline) -> None:
    pipe = make_pipeline()
    sched = FrameScheduler(pipe, timeline, SchedulerConfig(budget_ms=100))
    try:
        f = portrait_frames()[0].copy()
        r = await sched.render(f, 0.0, time.monotonic() - 0.01)  # already past its deadline
        assert r.mode == Mode.PASSTHROUGH and r.late and r.frame is f
        np.testing.assert_array_equal(f, portrait_frames()[0])
        assert sched.stats.by_mode["passthrough"] == 1
        # with time, the same scheduler dubs in full again
        r = await sched.render(portrait_frames()[1].copy(), 0.04, time.monotonic() + 0.5)
        assert r.mode == Mode.FULL and r.face and not r.late
    finally:
        await sched.aclose()
        pipe.tracker.close()


async def test_lookahead_uses_what_is_buffered_without_waiting() -> None:
    tl = DubAudioTimeline()
    tl.write(10.0, speechlike(0.5) * 3)  # audio for 10.0 .. 10.5 s
    pipe = make_pipeline()
    sched = FrameScheduler(pipe, tl, SchedulerConfig(budget_ms=200, lookahead_ms=100))
    try:
        f = portrait_frames()[0]
        r = await sched.render(f.copy(), 10.2, time.monotonic() + 0.2)
        assert r.lookahead == pytest.approx(0.1)
        t0 = time.monotonic()
        r = await sched.render(f.copy(), 10.44, time.monotonic() + 0.2)
        assert r.lookahead == pytest.approx(10.5 - 0.025 - 10.44)
        assert time.monotonic() - t0 < 0.15  # did not wait for more audio
        r = await sched.render(f.copy(), 11.0, time.monotonic() + 0.2)  # no audio there: silence
        assert r.lookahead == 0.0 and r.silent
        assert r.units is not None
    finally:
        await sched.aclose()
        pipe.tracker.close()
    assert bundle().closed_units.shape == r.units.shape


def test_with_region_changes_only_the_blended_pixels_and_keeps_timing() -> None:
    import fractions

    import av
    import cv2

    from rtdub.render.blend import PasteRegion
    from rtdub.stream.frames import with_region

    rng = np.random.default_rng(3)
    h, w = 120, 160
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    frame.pts, frame.time_base = 4711, fractions.Fraction(1, 90000)
    decoded = frame.to_ndarray(format="rgb24")
    x0, y0, bw, bh = 37, 51, 41, 29  # odd corner and size: the I420 box rounds outwards
    yy, xx = np.mgrid[0:bh, 0:bw]
    alpha = np.clip(1.2 - np.hypot((yy - bh / 2) / (bh / 2), (xx - bw / 2) / (bw / 2)), 0, 1).astype(np.float32)
    image = decoded.copy()
    image[y0 : y0 + bh, x0 : x0 + bw][alpha > 0] = (200, 30, 90)
    region = PasteRegion(x0, y0, alpha)
    out = with_region(frame, image, region)
    assert (out.pts, out.time_base, out.format.name) == (4711, frame.time_base, "yuv420p")
    got = out.to_ndarray(format="rgb24").astype(int)
    blended = np.zeros((h, w), bool)
    blended[y0 : y0 + bh, x0 : x0 + bw] = alpha > 0
    # every pixel the paste did not touch keeps its exact input value
    assert np.array_equal(got[~blended], decoded.astype(int)[~blended])
    core = np.zeros((h, w), bool)
    core[y0 : y0 + bh, x0 : x0 + bw] = alpha > 0.4  # away from the chroma of the edge blocks
    assert np.abs(got[core] - np.array([200, 30, 90])).max() <= 6
    assert frame.to_ndarray(format="rgb24").tobytes() == decoded.tobytes()  # the input is not modified
    # nothing changed: the input frame itself; changed without a region: the whole image
    assert with_region(frame, decoded, None, changed=False) is frame
    full = with_region(frame, image, None, changed=True).to_ndarray(format="rgb24")
    assert np.array_equal(full, image)


def _ahead_pipeline() -> object:
    from rtdub.face.trackahead import AheadTracker
    from rtdub.face.tracker import FaceTracker
    from rtdub.render.pipeline import DubPipeline, PipelineConfig
    from rtdub.stream.session import warm_up

    pipe = DubPipeline(bundle(), onnx_backend(), AheadTracker(FaceTracker()), PipelineConfig())  # type: ignore[arg-type]
    warm_up(pipe)
    return pipe


async def _run_speculative(
    timeline: DubAudioTimeline, frames: list[np.ndarray], speculate: bool = True
) -> tuple[list, FrameScheduler]:
    pipe = _ahead_pipeline()
    config = SchedulerConfig(budget_ms=10_000, speculate=speculate)
    sched = FrameScheduler(pipe, timeline, config)  # type: ignore[arg-type]
    out = []
    try:
        for i, f in enumerate(frames):
            pipe.tracker.submit(f.copy(), i / 25)  # type: ignore[attr-defined]  # as the session does on arrival
            out.append(await sched.render(f.copy(), i / 25, time.monotonic() + 10))
    finally:
        await sched.aclose()
        pipe.tracker.close()  # type: ignore[attr-defined]
    return out, sched


async def test_speculative_alignment_keeps_good_predictions_and_changes_only_the_face(
    timeline: DubAudioTimeline,
) -> None:
    from .streamkit import mouth_mask

    frames = [f.copy() for f in portrait_frames()[:12]]
    results, sched = await _run_speculative(timeline, frames)
    spec = sched.stats.speculation
    assert spec["kept"] >= 8 and spec["lost"] == 0  # the first two frames are tracked inline
    for src, r in zip(frames, results, strict=True):
        assert r.face and r.region is not None
        changed = np.any(src != r.frame, axis=-1)
        assert not (changed & ~mouth_mask(src.shape, r.region, 0.0)).any()


async def test_speculation_passes_through_when_the_face_is_gone_and_redoes_after_a_jump(
    timeline: DubAudioTimeline,
) -> None:
    frames = [f.copy() for f in portrait_frames()[:8]]
    blank = np.full_like(frames[0], 90)
    shifted = np.roll(frames[7], 60, axis=1)  # the head jumps 60 px: far outside the tolerance
    seq = frames[:5] + [blank] + frames[5:7] + [frames[7], shifted, np.roll(frames[0], 60, axis=1)]
    results, sched = await _run_speculative(timeline, seq)
    spec = sched.stats.speculation
    # frame 5 has no face: the prediction from frames 3-4 is rendered, then discarded
    assert spec["lost"] == 1
    assert not results[5].face and results[5].region is None
    assert np.array_equal(results[5].frame, blank)
    # the jump (frame 9) is rendered again with the tracked landmarks: the same paste as
    # without speculation
    assert spec["redone"] >= 1
    plain, sched0 = await _run_speculative(timeline, seq, speculate=False)
    assert sched0.stats.speculation == {"kept": 0, "redone": 0, "lost": 0}
    a, b = results[9].region, plain[9].region
    assert a is not None and b is not None
    assert (a.x0, a.y0) == (b.x0, b.y0) and np.array_equal(a.alpha, b.alpha)
