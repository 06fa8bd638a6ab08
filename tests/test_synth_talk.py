"""training/synth_talk.py: portraits driven by a prepared clip's lip motion (sync-expert data).

A fake generator session checks what ``animate`` feeds the generator (masked pose, the
portrait as reference, causal windows of the clip's z-scored lip units); the command itself
runs the bundled generator on a generated portrait and shard."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub.measure import samples
from rtdub.model import load_bundle
from rtdub.render.blend import face_mask
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


# --- speech-driven mode (--speech) ---


def test_speech_pieces_cut_files_and_tts_scenes(tmp_path: Path) -> None:
    from training.synth_talk import speech_pieces

    from .factories import speechlike, write_wav

    src = tmp_path / "speech"
    src.mkdir()
    long, short = speechlike(12.0, seed=1), speechlike(3.0, seed=2)
    write_wav(src / "long.wav", long)
    write_wav(src / "short.wav", short)
    write_wav(src / "held.wav", speechlike(6.0, seed=3))
    tts = speechlike(16.0, seed=4)
    scenes = json.dumps([{"voice": "en", "start": 0.0}, {"voice": "de", "start": 7.0}])
    np.savez(tmp_path / "tts_0000.npz", wav=(tts * 32767).astype(np.int16), scenes=np.array(scenes))

    pieces = speech_pieces([src, tmp_path / "tts_0000.npz"], ["held*"], 5.0)
    sr = 16000
    # 12 s: 5 + 5 (+ 2 s, under half a piece); 3 s: kept whole; scene 0 (7 s): 5 (+ 2);
    # scene 1 (9 s): 5 + 4
    assert [p.name for p in pieces] == [
        "long_0",
        "long_1",
        "short_0",
        "tts_0000_s0_0",
        "tts_0000_s1_0",
        "tts_0000_s1_1",
    ]
    assert [len(p.wav) for p in pieces] == [5 * sr, 5 * sr, 3 * sr, 5 * sr, 5 * sr, 4 * sr]
    np.testing.assert_allclose(pieces[1].wav, long[5 * sr : 10 * sr], atol=1e-4)
    np.testing.assert_allclose(pieces[5].wav, tts[12 * sr :], atol=1e-4)


class _FakeStage:
    """An audio-to-lip stage whose units are a known function of time, with its resets counted."""

    def __init__(self, units: int) -> None:
        self.units = units
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def units_at(self, mel: object, t: float) -> tuple[np.ndarray, bool]:
        return 0.2 * np.sin(2 * np.pi * 3 * t + np.arange(self.units)) + 0.5, False


def test_speech_clip_z_scores_the_stage_units_per_piece() -> None:
    from training.synth_talk import Speech, speech_clip

    from .factories import speechlike

    stage = _FakeStage(9)
    clip = speech_clip(Speech("x_0", speechlike(4.0)), stage)  # type: ignore[arg-type]
    assert stage.resets == 1 and clip.fps == 25.0 and len(clip.times) == 100 and clip.valid.all()
    np.testing.assert_allclose(clip.times, np.arange(100) / 25)
    assert clip.units is not None
    raw = np.stack([stage.units_at(None, float(t))[0] for t in clip.times])
    np.testing.assert_allclose(clip.units, (raw - raw.mean(0)) / raw.std(0), atol=1e-4)


def test_units_to_canon_round_trips_through_the_basis() -> None:
    from rtdub.face.lipunits import LIP_IDX, UnitStats, lip_points
    from training.synth_talk import units_to_canon

    basis = load_bundle().basis
    rng = np.random.default_rng(5)
    k = basis.components.shape[0]
    stats = UnitStats(
        rng.normal(0, 0.1, basis.n_units).astype(np.float32), rng.uniform(0.05, 0.2, basis.n_units).astype(np.float32)
    )
    units = rng.normal(0, 1, (30, basis.n_units)).astype(np.float32)
    still = rng.normal(0, 0.5, (468, 2)).astype(np.float32)
    canon = units_to_canon(units, basis, stats, still)
    assert canon.shape == (30, 468, 2)
    others = np.setdiff1d(np.arange(468), LIP_IDX)
    assert np.array_equal(canon[:, others], np.repeat(still[None, others], 30, 0))
    lips = np.stack([lip_points(c) for c in canon])
    np.testing.assert_allclose(lips.mean(1), np.repeat(still[None, LIP_IDX].mean(1), 30, 0), atol=1e-5)
    raw = basis.raw_units(lips)[:, :k]
    np.testing.assert_allclose(raw, (units * stats.std + stats.mean)[:, :k], atol=1e-4)


def test_speech_command_writes_shards_driven_by_the_audio(tmp_path: Path) -> None:
    from training.sync_augment import lip_targets

    from .factories import speechlike, write_wav

    faces, data, speech, out = (tmp_path / d for d in ("faces", "data", "speech", "out"))
    for d in (faces, data, speech):
        d.mkdir()
    cv2.imwrite(str(faces / "astro.png"), cv2.cvtColor(samples.portrait(), cv2.COLOR_RGB2BGR))
    prepared_shard(data / "a.npz", 2.0, seed=2)
    wav = speechlike(6.0, seed=6)
    write_wav(speech / "talk.wav", wav)
    args = ["--speech", str(speech), "--chunk", "3", "--data", str(data), "--faces", str(faces)]
    args += ["--bundle", "engines/default", "--out", str(out), "--threads", "1"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["synth_astro__speech_talk_0.npz", "synth_astro__speech_talk_1.npz"]
    z = np.load(out / "synth_astro__speech_talk_1.npz")
    assert z["crops"].shape == (75, 96, 96, 3) and float(z["fps"]) == 25.0 and z["valid"].all()
    np.testing.assert_allclose(z["wav"], wav[3 * 16000 :], atol=1e-4)
    clip = load_clip(out / "synth_astro__speech_talk_1.npz")
    gap = lip_targets(clip)[:, 0]
    assert gap.std() > 0.9  # the lips move...
    mouth = z["crops"][:, 60:84, 30:66].astype(np.float32).mean(axis=(1, 2, 3))
    assert mouth.std() > 0.5  # ...and so do the pixels, with the lips' opening
    assert abs(np.corrcoef(mouth, gap)[0, 1]) > 0.5

    bad = ["--speech", str(tmp_path / "missing"), "--faces", str(faces), "--data", str(data), "--out", str(out)]
    assert main(bad) == 2
