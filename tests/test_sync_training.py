"""Training side of the lip-sync expert: the identity-destroying augmentations
(training/sync_augment.py), the held-out offset probe (training/sync_probe.py) and the
in-graph input options of training/syncnet.py (exported with parity)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from rtdub import audio  # noqa: E402
from rtdub.measure.avsync import AVExpert, ExpertWindow, SyncNetExpert, video_input  # noqa: E402
from training.data import Clip  # noqa: E402
from training.sync_augment import (  # noqa: E402
    MOUTH_BOX,
    Appearance,
    Look,
    Sound,
    Voice,
    apply_appearance,
    apply_voice,
    draw_appearance,
    draw_voice,
    lip_targets,
)
from training.sync_probe import offset_probe  # noqa: E402
from training.syncnet import SyncConfig, SyncNet  # noqa: E402


def test_appearance_changes_colour_but_never_the_mouth_box_or_upper_half() -> None:
    rng = np.random.default_rng(0)
    win = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    a = Appearance(erase_p=1.0)
    x0, y0, x1, y1 = (int(round(f * 96)) for f in MOUTH_BOX)
    changed = 0
    for _ in range(20):
        out = apply_appearance(win, Look(), rng, a)
        assert out.dtype == np.uint8 and out.shape == win.shape
        np.testing.assert_array_equal(out[:, y0:y1, x0:x1], win[:, y0:y1, x0:x1])
        np.testing.assert_array_equal(out[:, :48], win[:, :48])
        changed += int((out != win).any())
    assert changed == 20  # something outside the mouth was erased every time
    gray = apply_appearance(win, Look(gray=True), rng, Appearance(erase_p=0))
    assert (gray[:, 48:, :, 0] == gray[:, 48:, :, 1]).all() and (gray[:, 48:, :, 1] == gray[:, 48:, :, 2]).all()
    p = draw_appearance(rng, Appearance())
    assert apply_appearance(win, p, rng, Appearance()).shape == win.shape


def test_voice_shift_gain_and_range() -> None:
    rng = np.random.default_rng(0)
    mel = rng.uniform(-3, 3, (16, audio.N_MELS)).astype(np.float32)
    v = Voice(noise=0.0)
    out = apply_voice(mel, Sound(gain=0.5, shift=2), rng, v)
    np.testing.assert_allclose(out[:, 2:], np.clip(mel[:, :-2] + 0.5, -4, 4), atol=1e-6)
    np.testing.assert_allclose(out[:, 0], np.clip(mel[:, 0] + 0.5, -4, 4), atol=1e-6)
    floored = apply_voice(mel, Sound(floor=-1.0), rng, v)
    assert floored.min() >= -1.0
    for _ in range(10):
        o = apply_voice(mel, draw_voice(rng, Voice()), rng, Voice())
        assert o.shape == mel.shape and np.abs(o).max() <= audio.MAX_ABS


def _clip(crops: np.ndarray, mel: np.ndarray, fps: float, lips: np.ndarray | None = None) -> Clip:
    n = len(crops)
    return Clip(
        name="synthetic",
        crops=crops,
        lips=lips if lips is not None else np.zeros((n, 40, 2), np.float32),
        times=np.arange(n) / fps,
        valid=np.ones(n, bool),
        mel=mel,
        wav=np.zeros(1, np.float32),
        fps=fps,
    )


def test_lip_targets_are_per_clip_z_scores_and_flip_invariant() -> None:
    rng = np.random.default_rng(0)
    lips = rng.normal(0, 0.1, (50, 40, 2)).astype(np.float32) + np.array([0.0, 0.8], np.float32)
    t = lip_targets(_clip(np.zeros((50, 4, 4, 3), np.uint8), np.zeros((1, 80)), 25, lips))
    assert t.shape == (50, 3)
    np.testing.assert_allclose(t.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(t.std(0), 1, atol=1e-4)
    flipped = lips * np.array([-1.0, 1.0], np.float32)
    np.testing.assert_allclose(lip_targets(_clip(np.zeros((50, 4, 4, 3), np.uint8), np.zeros((1, 80)), 25, flipped)), t)


class _Angle(torch.nn.Module):
    """A value in [0, 1] -> the unit vector (cos, sin) of value·π/2."""

    def embed(self, value: torch.Tensor) -> torch.Tensor:
        th = value.clamp(0, 1) * (np.pi / 2)
        return torch.stack([torch.cos(th), torch.sin(th)], dim=1)


class _FakeVideo(_Angle):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # brightness of the window's first frame
        return self.embed(x[:, 0:3].mean(dim=(1, 2, 3)))


class _FakeAudio(_Angle):
    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # level of the window's first mel frame
        return self.embed((mel[:, 0].mean(dim=1) + 4) / 8)


class _FakeExpert(torch.nn.Module):
    """A perfect expert for clips whose frame brightness is written into their mel."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = SyncConfig()
        self.video = _FakeVideo()
        self.audio = _FakeAudio()


def test_offset_probe_finds_every_delay_with_a_perfect_expert() -> None:
    fps, n = 20.0, 230  # 4 mel frames per video frame
    rng = np.random.default_rng(3)
    level = rng.uniform(0.1, 0.9, n)
    crops = np.broadcast_to((level * 255).astype(np.uint8)[:, None, None, None], (n, 96, 96, 3)).copy()
    mel = np.repeat((np.round(level * 255) / 255 * 8 - 4)[:, None], 4, axis=0) * np.ones((1, audio.N_MELS))
    res = offset_probe(_FakeExpert(), [_clip(crops, mel.astype(np.float32), fps)])  # type: ignore[arg-type]
    assert res["trials"] == 2 * 21  # two 100-frame segments (226 windows), 21 delays
    assert res["exact"] == 1.0 and res["within_1"] == 1.0


@pytest.mark.parametrize("opts", [{"gray": True, "downsample": 2, "standardize": True}, {"downsample": 2}])
def test_in_graph_input_options_export_with_parity(tmp_path: Path, opts: dict[str, object]) -> None:
    from engines.export_sync import PARITY_TOL, export_bundle

    torch.manual_seed(0)
    model = SyncNet(SyncConfig(width=8, embed=32, lip_targets=15, **opts))  # type: ignore[arg-type]
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 15, 48, 96), torch.rand(16, 16, 80) * 8 - 4)
    model.eval()
    man = export_bundle(model, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["downsample"] == 2
    assert max(man["parity_max_abs"].values()) <= PARITY_TOL
    ex = SyncNetExpert(tmp_path, threads=1)
    windows = np.random.default_rng(1).integers(0, 256, (4, 5, 96, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = model.video(torch.from_numpy(video_input(windows))).numpy()
    np.testing.assert_allclose(ex.embed_video(windows), ref, atol=PARITY_TOL)


class _BrightnessExpert(AVExpert):
    """Torch-free twin of _FakeExpert for training/eval_sync.py."""

    window = ExpertWindow(frames=5, crop_size=96, mel_frames=16, mel_start=0.0)

    @staticmethod
    def _angle(value: np.ndarray) -> np.ndarray:
        th = np.clip(value, 0, 1) * (np.pi / 2)
        return np.stack([np.cos(th), np.sin(th)], axis=1).astype(np.float32)

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        return self._angle(frames[:, 0].reshape(len(frames), -1).mean(1) / 255.0)

    def embed_audio(self, mels: np.ndarray) -> np.ndarray:
        return self._angle((mels[:, 0].mean(1) + 4) / 8)


def test_eval_sync_trials_find_every_delay_and_reuse_audio() -> None:
    from training.eval_sync import offset_trials, summarise

    fps, n = 20.0, 230
    level = np.random.default_rng(4).uniform(0.1, 0.9, n)
    crops = np.broadcast_to((level * 255).astype(np.uint8)[:, None, None, None], (n, 96, 96, 3)).copy()
    mel = np.repeat((np.round(level * 255) / 255 * 8 - 4)[:, None], 4, axis=0) * np.ones((1, audio.N_MELS))
    clip = _clip(crops, mel.astype(np.float32), fps)
    cache: dict[tuple[str, int], np.ndarray] = {}
    trials = offset_trials(_BrightnessExpert(), clip, crops, range(-10, 11), 100, False, cache)
    assert len(cache) == 21 and len(trials) == 42
    s = summarise(trials)
    assert s["exact"] == 1.0 and s["within_1"] == 1.0
    flat = crops.copy()
    flat[:] = 128  # no video signal: the cached audio is reused, the offsets are no longer found
    s2 = summarise(offset_trials(_BrightnessExpert(), clip, flat, range(-10, 11), 100, False, cache))
    assert len(cache) == 21 and s2["exact"] < 0.5


def _clip_of(n: int, name: str = "c") -> Clip:
    crops = np.zeros((n, 8, 8, 3), np.uint8)
    return Clip(
        name,
        crops,
        np.zeros((n, 40, 2), np.float32),
        np.arange(n) / 25.0,
        np.ones(n, bool),
        np.zeros((4 * n, audio.N_MELS), np.float32),
        np.ones(10, np.float32),
        25.0,
    )


def test_run_weights_give_extra_clips_their_share() -> None:
    from training.train_sync import run_weights

    real, extra = [_clip_of(104), _clip_of(54)], [_clip_of(24), _clip_of(24), _clip_of(54)]
    w = run_weights(real, [], 0.5, 5)
    assert np.allclose(w, [100 / 150, 50 / 150])
    w = run_weights(real, extra, 0.75, 5)
    assert np.isclose(w.sum(), 1) and np.isclose(w[:2].sum(), 0.25) and np.isclose(w[2:].sum(), 0.75)
    assert np.allclose(w[2:] / 0.75, [2 / 9, 2 / 9, 5 / 9])  # 20, 20 and 50 windows


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_validation_clips_pick_the_best_checkpoint_and_stay_out_of_training(tmp_path: Path, ema: float) -> None:
    from safetensors.torch import load_file

    from training.train_sync import main

    from .factories import prepared_shard

    data, dev, extra, out = (tmp_path / d for d in ("data", "dev", "extra", "out"))
    for d in (data, dev, extra):
        d.mkdir()
    prepared_shard(data / "train_a.npz", 2.4, seed=0)
    prepared_shard(data / "val_a.npz", 4.4, seed=1)
    prepared_shard(data / "held_a.npz", 2.4, seed=2)
    prepared_shard(dev / "speaker_x.npz", 2.4, seed=3)
    prepared_shard(extra / "synth_x.npz", 2.4, seed=4)
    args = ["--data", str(data), "--dev", str(dev), "--extra", str(extra), "--holdout", "held*"]
    args += ["--validate", "val*", "--out", str(out), "--steps", "3", "--save-every", "1", "--threads", "1"]
    args += ["--batch", "8", "--run-length", "4", "--width", "8", "--embed", "32", "--ema", str(ema)]
    assert main(args) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train"] == ["train_a", "synth_x"] and meta["validation"] == ["val_a"]
    assert meta["held_out"] == ["held_a", "speaker_x"] and meta["extra_share"] == 0.5
    # OUT/best holds the first checkpoint with the highest (within ±1, exact) on validation
    scores = [(r["validation_offsets"]["within_1"], r["validation_offsets"]["exact"]) for r in log]
    best = json.loads((out / "best" / "meta.json").read_text())
    assert best["step"] == log[scores.index(max(scores))]["step"]
    assert best["validation_offsets"] == log[scores.index(max(scores))]["validation_offsets"]
    assert log[0]["validation_offsets"]["trials"] == 21  # one 100-frame segment × 21 delays
    if ema:  # the average is what is saved and probed; the raw weights go on beside it
        avg, raw = load_file(str(out / "model.safetensors")), load_file(str(out / "raw" / "model.safetensors"))
        assert avg.keys() == raw.keys() and any(not torch.equal(avg[k], raw[k]) for k in avg)
        assert json.loads((out / "raw" / "meta.json").read_text())["step"] == 3
    else:
        assert not (out / "raw").exists()


def test_ema_update_averages_floats_and_copies_counters() -> None:
    from training.train_sync import ema_update

    torch.manual_seed(0)
    a, b = (
        torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)),
        torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)),
    )
    b[1].num_batches_tracked.fill_(7)
    b[1].running_mean.fill_(1.0)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    ema_update(a, b, 0.75)
    after, src = a.state_dict(), b.state_dict()
    for k, v in after.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.75 * before[k] + 0.25 * src[k])
        else:
            assert torch.equal(v, src[k])
    assert torch.allclose(a[1].running_mean, torch.full((2,), 0.25))


def test_audio_lip_head_reads_the_audio_alone_and_stays_out_of_the_export(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from engines.export_sync import PARITY_TOL, export_bundle
    from training.common import load_checkpoint
    from training.train_sync import Embeddings, main

    from .factories import prepared_shard

    torch.manual_seed(0)
    model = SyncNet(SyncConfig(width=8, embed=32, lip_targets=15, audio_lip_targets=15)).eval()
    frames, mel = torch.rand(4, 15, 48, 96), torch.rand(4, 16, 80) * 8 - 4
    with torch.no_grad():
        v, a, vl, al = Embeddings(model)(frames, mel)
        _, a2, vl2, al2 = Embeddings(model)(torch.rand(4, 15, 48, 96), mel)
        _, _, _, al3 = Embeddings(model)(frames, torch.rand(4, 16, 80) * 8 - 4)
    assert vl is not None and al is not None and al2 is not None and al3 is not None and vl2 is not None
    assert al.shape == (4, 15) and torch.equal(al, al2) and torch.equal(a, a2)
    assert not torch.allclose(al, al3) and not torch.allclose(vl, vl2)

    data, dev, out = tmp_path / "data", tmp_path / "dev", tmp_path / "out"
    data.mkdir()
    dev.mkdir()
    prepared_shard(data / "train_a.npz", 2.4, seed=0)
    prepared_shard(dev / "speaker_x.npz", 2.4, seed=3)
    args = ["--data", str(data), "--dev", str(dev), "--out", str(out), "--steps", "2"]
    args += ["--batch", "8", "--run-length", "4", "--width", "8", "--embed", "32", "--threads", "1"]
    assert main([*args, "--audio-lip-weight", "0.5", "--keep", "--save-every", "1"]) == 0
    assert sorted(p.name for p in (out / "steps").iterdir()) == ["1", "2"]  # --keep: every checkpoint
    assert json.loads((out / "steps" / "1" / "meta.json").read_text())["step"] == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["audio_lip_weight"] == 0.5 and meta["config"]["audio_lip_targets"] == 15
    assert meta["config"]["lip_targets"] == 0  # the video head is its own option
    weights = load_file(str(out / "model.safetensors"))
    assert weights["audio_lip_head.weight"].shape == (15, 32) and "lip_head.weight" not in weights
    trained = SyncNet(SyncConfig(**meta["config"]))
    load_checkpoint(out, trained)
    man = export_bundle(trained.eval(), tmp_path / "onnx")
    assert max(man["parity_max_abs"].values()) <= PARITY_TOL


def test_audio_offsets_shift_training_clips_and_the_synthetic_clips_they_drove() -> None:
    from training.data import apply_audio_offsets, offset_records
    from training.syncnet import mel_at

    clips = [_clip_of(50, n) for n in ("real_a", "real_b", "real_c", "synth_face__real_a", "synth_face__real_c")]
    clips[1].fps = 30.0
    records = offset_records(
        [
            {"clip": "real_a", "shift": 3, "decided": True, "confidence": 0.3},
            {"clip": "real_b", "shift": -2, "decided": True},
            {"clip": "real_c", "shift": 4, "decided": False},  # undecided: not applied
            {"clip": "real_x", "shift": 1, "decided": True},
        ]
    )
    lags = apply_audio_offsets(clips, records, min_shift=2)
    assert lags == {"real_a": 3 / 25, "real_b": -2 / 30, "synth_face__real_a": 3 / 25}
    assert [c.audio_lag for c in clips] == [3 / 25, -2 / 30, 0.0, 3 / 25, 0.0]
    assert apply_audio_offsets([_clip_of(50, "real_x")], records, min_shift=2) == {}  # |1| < 2
    # a lagging clip is read later: its windows are those of the same mel, 3 frames on
    cfg = SyncConfig()
    clips[0].mel = np.random.default_rng(0).normal(0, 1, (400, audio.N_MELS)).astype(np.float32)
    plain = _clip_of(50)
    plain.mel = clips[0].mel
    np.testing.assert_array_equal(mel_at(clips[0], 0.4, cfg), mel_at(plain, 0.4 + 3 / 25, cfg))
    assert not np.array_equal(mel_at(clips[0], 0.4, cfg), mel_at(plain, 0.4, cfg))


@pytest.mark.parametrize("content", ['{"clip": "a"}', '[{"clip": "a"}]', "not json"])
def test_bad_audio_offsets_file_is_a_usage_error(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train_sync import main

    bad = tmp_path / "offsets.json"
    bad.write_text(content)
    with pytest.raises(SystemExit) as exc:
        main(["--audio-offsets", str(bad), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: --audio-offsets: " in err[-1] and str(bad) in err[-1]
    with pytest.raises(SystemExit):
        main(["--audio-offsets", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
