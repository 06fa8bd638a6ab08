"""training/synth_talk.py: portraits driven by a prepared clip's lip motion (sync-expert data).

A fake generator session checks what ``animate`` feeds the generator (masked pose, the
portrait as reference, causal windows of the clip's z-scored lip units); the command itself
runs the bundled generator on a generated portrait and shard."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub import samples
from rtdub.blend import face_mask
from rtdub.model import load_bundle
from training.data import attach_units, load_clip
from training.synth_talk import animate, main

from .factories import prepared_shard


class _FakeGenerator:
    """Returns the reference with its brightness set by the newest frame's last unit (the
    z-scored inner-lip gap), and records every feed."""

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert names == ["face"]
        self.feeds.append(feed)
        level = 1 / (1 + np.exp(-feed["units"][:, -1, -1]))
        return [np.broadcast_to(level[:, None, None, None], feed["reference"].shape).astype(np.float32)]


def test_animate_feeds_masked_pose_portrait_and_causal_units(tmp_path: Path) -> None:
    prepared_shard(tmp_path / "c.npz", 3.0, seed=1)
    clip = load_clip(tmp_path / "c.npz")
    clip.valid[10:14] = False  # no face there: the still is kept
    bundle = load_bundle()
    crop = (np.random.default_rng(0).uniform(0, 255, (96, 96, 3))).astype(np.uint8)
    fake = _FakeGenerator()
    with pytest.raises(ValueError, match="no lip units"):
        animate(fake, crop, clip, bundle)  # type: ignore[arg-type]
    attach_units([clip], bundle.basis)
    out = animate(fake, crop, clip, bundle, batch=16)  # type: ignore[arg-type]

    assert out.shape == (len(clip.lips), 96, 96, 3) and out.dtype == np.uint8
    assert np.array_equal(out[10:14], np.repeat(crop[None], 4, 0))
    hidden = face_mask(96).hidden
    ref = crop.astype(np.float32).transpose(2, 0, 1) / 255
    for feed in fake.feeds:
        assert np.allclose(feed["reference"], ref[None])
        assert np.all(feed["pose"][:, :, hidden] == 0)
        assert np.allclose(feed["pose"][:, :, ~hidden], ref[None][:, :, ~hidden])
        assert feed["units"].shape[1:] == (bundle.context, bundle.n_units)
    # frame i's output follows the clip's own inner-lip gap at frame i, and nothing later
    assert clip.units is not None
    z = clip.units
    assert np.allclose(z[clip.valid].mean(0), 0, atol=1e-4) and np.allclose(z[clip.valid].std(0), 1, atol=1e-2)
    ok = np.nonzero(clip.valid)[0]
    expected = np.round(255 / (1 + np.exp(-z[ok, -1])))
    assert np.abs(out[ok, 0, 0, 0].astype(float) - expected).max() <= 1
    assert np.corrcoef(out[ok, 0, 0, 0], z[ok, -1])[0, 1] > 0.95


def test_command_writes_a_shard_per_portrait_and_clip(tmp_path: Path) -> None:
    faces, data, out = tmp_path / "faces", tmp_path / "data", tmp_path / "out"
    faces.mkdir()
    data.mkdir()
    cv2.imwrite(str(faces / "astro.png"), cv2.cvtColor(samples.portrait(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(faces / "blank.png"), np.full((200, 200, 3), 127, np.uint8))  # no face: skipped
    prepared_shard(data / "a.npz", 2.0, seed=2)
    prepared_shard(data / "held.npz", 2.0, seed=3)

    assert (
        main(["--data", str(data), "--faces", str(faces), "--out", str(out), "--exclude", "held*", "--threads", "1"])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["synth_astro__a.npz"]
    z, src = np.load(out / "synth_astro__a.npz"), np.load(data / "a.npz")
    for key in ("canon", "times", "valid", "wav", "fps"):
        assert np.array_equal(z[key], src[key])
    crops = z["crops"].astype(np.float32)
    assert crops.shape == src["crops"].shape
    # the portrait, not the driving clip's texture, and a mouth that moves
    lower = crops[:, 56:84, 28:68].mean(axis=(1, 2, 3))
    assert lower.std() > 0.5
    assert np.abs(crops.mean(0) - src["crops"].astype(np.float32).mean(0)).mean() > 20

    mtime = (out / "synth_astro__a.npz").stat().st_mtime_ns
    assert main(["--data", str(data), "--faces", str(faces), "--out", str(out), "--threads", "1"]) == 0
    assert (out / "synth_astro__a.npz").stat().st_mtime_ns == mtime  # kept, not redone
    assert (out / "synth_astro__held.npz").is_file()


@pytest.mark.parametrize("what", ["no-faces", "no-data"])
def test_command_rejects_empty_inputs(tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    faces, data = tmp_path / "faces", tmp_path / "data"
    faces.mkdir()
    data.mkdir()
    if what == "no-data":
        cv2.imwrite(str(faces / "astro.png"), cv2.cvtColor(samples.portrait(), cv2.COLOR_RGB2BGR))
    else:
        prepared_shard(data / "a.npz", 1.0, seed=0)
    assert main(["--data", str(data), "--faces", str(faces), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
