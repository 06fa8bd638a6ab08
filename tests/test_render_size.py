"""The render size of live streams: chosen per face unless fixed (the crop size turns hi-res
compositing off); a size below the model's crop size is refused (one-line error from the
CLI); clips can be scored at a webcam's resolution (``load_clip(height=...)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtdub.cli.main import main
from rtdub.engine import EngineConfig
from rtdub.measure.evaluation import load_clip
from rtdub.model import load_bundle
from rtdub.stream.session import StreamConfig, default_pipeline_factory

from .factories import speechlike, talking_clip


@pytest.mark.parametrize("size", [None, 0, 96, 192])
def test_stream_pipeline_render_size(size: int | None) -> None:
    engine = EngineConfig.stream() if size is None else EngineConfig.stream().with_options(render_size=size)
    config = StreamConfig(engine=engine, track_ahead=False)
    pipe = default_pipeline_factory(config)()
    try:
        assert pipe.config.render.size == (size or 0)
    finally:
        pipe.tracker.close()


def test_stream_pipeline_refuses_a_render_size_below_the_crop() -> None:
    with pytest.raises(ValueError, match="crop size"):
        default_pipeline_factory(StreamConfig(engine=EngineConfig.stream().with_options(render_size=50)))


@pytest.mark.parametrize("value", ["50", "-1"])
def test_cli_refuses_a_bad_render_size(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--render-size", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--render-size" in err[0]


def test_load_clip_at_a_lower_height(tmp_path: Path) -> None:
    path = talking_clip(tmp_path / "c.mp4", seconds=0.6, audio=speechlike(0.6), size=320)
    bundle = load_bundle(None)
    full = load_clip(path, bundle)
    small = load_clip(path, bundle, height=160)
    assert full.frames[0].shape == (320, 320, 3)
    assert small.frames[0].shape == (160, 160, 3)
    assert len(small.frames) == len(full.frames)
    # the face is found at the lower resolution too; the lip track is in face-size units, so
    # the same shapes come out at both sizes
    ok = np.isfinite(full.truth.gap) & np.isfinite(small.truth.gap)
    assert ok.sum() >= len(full.frames) // 2
    ratio = np.nanmedian(small.truth.lips[ok].std(axis=1) / full.truth.lips[ok].std(axis=1))
    assert 0.8 < ratio < 1.25
