"""Lip-sync metrics (rtdub/measure/avsync.py), the expert interface, the ONNX expert's parity with torch,
and the ``rtdub eval`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtdub import audio
from rtdub.measure.avsync import (
    AVExpert,
    ClipEmbeddings,
    ExpertWindow,
    SyncNetExpert,
    avs_m,
    avs_u,
    avs_v,
    default_expert_dir,
    lse,
    offset_distances,
)

from .factories import faceless_clip, speechlike, talking_clip, write_wav
from .test_cli import assert_one_line_error, run_cli


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def syncnet_python_pdist(v: np.ndarray, a: np.ndarray, vshift: int) -> np.ndarray:
    """A literal loop transcription of syncnet_python's calc_pdist + mean over frames."""
    win = 2 * vshift + 1
    ap = np.concatenate([np.zeros((vshift, a.shape[1])), a, np.zeros((vshift, a.shape[1]))])
    dists = []
    for i in range(len(v)):
        dists.append([np.linalg.norm(v[i] - ap[i + j] + 1e-6) for j in range(win)])
    return np.mean(np.array(dists), axis=0)


@pytest.mark.parametrize("lag", [-9, -3, 0, 2, 7])
def test_lse_finds_a_known_offset(lag: int) -> None:
    rng = np.random.default_rng(lag + 20)
    n, e = 80, 32
    a = unit(rng.standard_normal((n + 40, e)))
    # the sound of video frame i sits at audio frame i + lag
    v = unit(a[20 + lag : 20 + lag + n] + 0.3 * rng.standard_normal((n, e)))
    a = a[20 : 20 + n]
    s = lse(v, a)
    assert s.offset == -lag  # syncnet_python's sign: audio lagging -> negative offset
    assert s.distances.shape == (31,)
    assert s.lse_d == pytest.approx(s.distances.min())
    assert s.lse_c == pytest.approx(np.median(s.distances) - s.distances.min())
    assert s.lse_c > 0.3
    np.testing.assert_allclose(offset_distances(v, a), syncnet_python_pdist(v, a, 15), rtol=1e-10)
    assert lse(v, a, valid_only=True).offset == -lag


def test_lse_rejects_empty() -> None:
    with pytest.raises(ValueError):
        lse(np.zeros((0, 4)), np.zeros((0, 4)))


class FakeExpert(AVExpert):
    """Embeds the brightness of the lower half of each frame, and the loudness of the mel
    window, as angles on a circle: in sync they agree."""

    def __init__(self) -> None:
        self.window = ExpertWindow(frames=5, crop_size=16, mel_frames=16, mel_start=0.0)

    @staticmethod
    def _angle(x: np.ndarray) -> np.ndarray:
        return np.stack([np.cos(x), np.sin(x)], axis=1).astype(np.float32)

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        assert frames.shape[1:] == (5, 16, 16, 3) and frames.dtype == np.uint8
        return self._angle(frames[:, :, 8:].mean(axis=(2, 3, 4)).mean(1) / 255 * np.pi)

    def embed_audio(self, mels: np.ndarray) -> np.ndarray:
        assert mels.shape[1:] == (16, audio.N_MELS)
        return self._angle((mels.mean(axis=(1, 2)) + 4) / 8 * np.pi)


def test_fake_expert_through_the_interface() -> None:
    fps, n, lag = 25.0, 100, 4
    rng = np.random.default_rng(0)
    level = np.repeat(rng.uniform(0, 1, n // 5 + 10), 5)  # slowly varying "mouth opening"
    times = np.arange(n) / fps
    # mel: every 3.2 mel frames follow the level of video frame i + lag (audio lags by `lag`)
    t_mel = np.arange(int(n / fps * audio.MEL_FPS)) / audio.MEL_FPS
    mel = np.repeat((level[np.minimum((t_mel * fps).astype(int), n - 1)] * 8 - 4)[:, None], 80, 1)
    crops = np.zeros((n, 16, 16, 3), np.uint8)
    crops[:, 8:] = (level[np.clip(np.arange(n) - lag, 0, None)] * 255).astype(np.uint8)[:, None, None, None]
    ex = FakeExpert()
    emb = ex.embed_clip(crops, mel, times)
    assert emb.video.shape == emb.audio.shape == (n - 4, 2)
    s = lse(emb.video, emb.audio)
    assert abs(s.offset - lag) <= 1, s  # video frame i shows audio frame i - lag: audio leads
    assert avs_u(emb) > 0.5
    assert avs_v(emb, emb) == pytest.approx(1.0)
    mm = ex.embed_multimodal(ex.video_windows(crops), ex.audio_windows(mel, times[: n - 4]))
    np.testing.assert_allclose(np.linalg.norm(mm, axis=1), 1.0, rtol=1e-5)
    assert avs_m(mm, mm) == pytest.approx(1.0)
    other = ClipEmbeddings(-emb.video, emb.audio)
    assert avs_v(other, emb) == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A randomly initialised expert, exported through engines/export_sync.py."""
    torch = pytest.importorskip("torch")
    from engines.export_sync import export_bundle
    from training.syncnet import SyncConfig, SyncNet

    torch.manual_seed(0)
    model = SyncNet(SyncConfig(width=8, embed=32))
    model.train()  # non-trivial BatchNorm statistics, so the export's eval mode matters
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 15, 48, 96), torch.rand(16, 16, 80) * 8 - 4)
    out = tmp_path_factory.mktemp("syncnet")
    export_bundle(model.eval(), out)
    return out, model


@pytest.fixture(scope="module")
def random_expert(random_model: tuple[Path, Any]) -> Path:
    return random_model[0]


def test_onnx_parity_with_torch(random_model: tuple[Path, Any]) -> None:
    """The runtime (onnxruntime, from uint8 crop windows) agrees with torch within 1e-4."""
    import torch

    from engines.export_sync import PARITY_TOL
    from rtdub.measure.avsync import video_input

    root, model = random_model
    man = json.loads((root / "manifest.json").read_text())
    assert max(man["parity_max_abs"].values()) <= PARITY_TOL
    ex = SyncNetExpert(root, threads=1)
    rng = np.random.default_rng(1)
    windows = rng.integers(0, 256, (6, 5, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (6, 16, 80)).astype(np.float32)
    with torch.no_grad():
        ref_v = model.video(torch.from_numpy(video_input(windows))).numpy()
        ref_a = model.audio(torch.from_numpy(mels)).numpy()
    np.testing.assert_allclose(ex.embed_video(windows), ref_v, atol=PARITY_TOL)
    np.testing.assert_allclose(ex.embed_audio(mels), ref_a, atol=PARITY_TOL)
    np.testing.assert_allclose(np.linalg.norm(ref_v, axis=1), 1.0, rtol=1e-5)


def test_committed_bundle_is_small_and_loads() -> None:
    root = default_expert_dir()
    if not (root / "manifest.json").exists():
        pytest.skip("engines/syncnet not exported yet")
    size = sum(f.stat().st_size for f in root.iterdir())
    assert size < 10e6
    man = json.loads((root / "manifest.json").read_text())
    assert max(man["parity_max_abs"].values()) <= man["parity_tolerance"]
    ex = SyncNetExpert(root, threads=1)
    w = ex.window
    v = ex.embed_video(np.zeros((2, w.frames, w.crop_size, w.crop_size, 3), np.uint8))
    a = ex.embed_audio(np.zeros((2, w.mel_frames, audio.N_MELS), np.float32))
    assert v.shape == a.shape == (2, man["embed"])


def test_runtime_does_not_import_torch() -> None:
    code = "import sys, rtdub.measure.avsync, rtdub.measure.scoring, rtdub.cli.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0


# --- rtdub eval ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> Path:
    return talking_clip(media_dir / "eval_clip.mp4", seconds=1.6, audio=speechlike(1.6, seed=5), size=256)


def test_eval_missing_video(tmp_path: Path, clip: Path, random_expert: Path) -> None:
    missing = tmp_path / "nope.mp4"
    res = run_cli("eval", "--video", str(missing), "--audio", str(clip), "--expert", str(random_expert))
    assert_one_line_error(res, missing, "no such file")


def test_eval_audio_without_audio_stream(media_dir: Path, clip: Path, random_expert: Path) -> None:
    silent = talking_clip(media_dir / "eval_noaudio.mp4", seconds=0.5, audio=None, size=128)
    res = run_cli("eval", "--video", str(clip), "--audio", str(silent), "--expert", str(random_expert))
    assert_one_line_error(res, silent, "no audio stream")


def test_eval_no_face(tmp_path: Path, random_expert: Path) -> None:
    faceless = faceless_clip(tmp_path / "faceless.mp4", seconds=0.4)
    res = run_cli("eval", "--video", str(faceless), "--audio", str(faceless), "--expert", str(random_expert))
    assert_one_line_error(res, faceless, "no face")


def test_eval_bad_expert(tmp_path: Path, clip: Path) -> None:
    res = run_cli("eval", "--video", str(clip), "--audio", str(clip), "--expert", str(tmp_path))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "manifest.json" in res.stderr


def test_eval_json_schema(media_dir: Path, clip: Path, random_expert: Path) -> None:
    other = write_wav(media_dir / "eval_other.wav", speechlike(1.6, seed=9))
    res = run_cli(
        "eval", "--video", str(clip), "--audio", str(other), "--reference", str(clip),
        "--expert", str(random_expert), "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert set(rep) == {
        "video", "audio", "reference", "frames", "faces", "fps", "lse_d", "lse_c", "av_offset",
        "avs_u", "psnr", "ssim", "lmd", "moc", "avs_v", "avs_m", "audio_seconds", "video_seconds",
        "paired_frames", "unpaired_video_frames", "unpaired_reference_frames",
        "av_offset_expert", "av_offset_evidence", "av_offset_from", "evidence_confidence", "av_offset_phones",
    }  # fmt: skip
    assert rep["frames"] == 40 and rep["faces"] >= 35 and rep["fps"] == pytest.approx(25)
    assert rep["paired_frames"] == 40 and rep["unpaired_video_frames"] == rep["unpaired_reference_frames"] == 0
    assert isinstance(rep["av_offset"], int) and -15 <= rep["av_offset"] <= 15
    assert 0 <= rep["lse_d"] <= 2.1 and rep["lse_c"] >= 0
    # the clip against itself: identical pixels and landmarks
    assert rep["psnr"] is None  # infinite
    assert rep["ssim"] == pytest.approx(1.0) and rep["lmd"] == pytest.approx(0.0)
    assert rep["moc"] == pytest.approx(1.0)
    assert rep["avs_v"] == pytest.approx(1.0, abs=1e-5) and rep["avs_m"] == pytest.approx(1.0, abs=1e-5)

    res = run_cli("eval", "--video", str(clip), "--audio", str(other), "--expert", str(random_expert))
    assert res.returncode == 0, res.stderr
    assert "LSE-C" in res.stdout and "AV offset" in res.stdout and "PSNR" not in res.stdout
