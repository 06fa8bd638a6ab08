"""Audio-visual sync metrics on an expert interface (docs/design.md §3), torch-free.

An :class:`AVExpert` embeds windows of aligned face crops and mel windows into a shared
space. :class:`SyncNetExpert` runs the project's lip-sync expert (the ONNX bundle in
``engines/syncnet``, made by ``engines/export_sync.py``); a user's AV-HuBERT can be
plugged in by subclassing :class:`AVExpert`.

Metrics, as syncnet_python computes them (``SyncNetInstance.calc_pdist`` and ``evaluate``):
for each offset k in −15…+15 frames, the Euclidean distance between the video embedding of
frame i and the audio embedding of frame i + k (zero vector outside the clip), averaged
over frames. LSE-D = min over offsets, LSE-C = median over offsets − min, AV offset = 15 −
argmin, i.e. syncnet_python's sign: a positive offset means the audio leads the video (the
sound of video frame i is found at audio frame i − offset). Our embeddings are
L2-normalised, so distances lie in [0, 2]: the values are not on the scale of the
published LSE numbers, which come from syncnet_python's unnormalised 1024-d features.

AVS metrics (cosine similarities, mean over frames): AVSu between the video and audio
embeddings of one clip; AVSv between the video embeddings of the generated clip and the
ground truth; AVSm between their multimodal (audio + video) embeddings.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import audio
from ..exceptions import ModelError
from ..model import ENGINES_DIR

logger = logging.getLogger(__name__)

VSHIFT = 15  # syncnet_python's default search range, in video frames
_PDIST_EPS = 1e-6  # torch.nn.functional.pairwise_distance's eps


@dataclass(frozen=True)
class ExpertWindow:
    """What an expert consumes per video frame i."""

    frames: int  # video frames i..i+frames-1
    crop_size: int  # side of the aligned crops (rtdub.face.align)
    mel_frames: int  # mel window length
    mel_start: float  # seconds from the time of frame i to the start of its mel window


class AVExpert(ABC):
    """Embeds video and audio windows into one space where in-sync pairs are close."""

    window: ExpertWindow

    @abstractmethod
    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """(B, frames, S, S, 3) uint8 windows of aligned crops -> (B, E) float32."""

    @abstractmethod
    def embed_audio(self, mels: np.ndarray) -> np.ndarray:
        """(B, mel_frames, 80) mel windows (rtdub.audio scale) -> (B, E) float32."""

    def embed_multimodal(self, frames: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """Fused embedding of a video and an audio window (for AVSm). The default
        concatenates the two unit vectors and renormalises; AV-HuBERT would fuse."""
        return _unit(np.concatenate([_unit(self.embed_video(frames)), _unit(self.embed_audio(mels))], axis=1))

    # helpers shared by every expert -------------------------------------------------
    def video_windows(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) crops -> (N - frames + 1, frames, S, S, 3) consecutive windows."""
        f = self.window.frames
        n = len(crops) - f + 1
        if n <= 0:
            return np.zeros((0, f, *crops.shape[1:]), crops.dtype)
        return np.stack([crops[i : i + f] for i in range(n)])

    def audio_windows(self, mel: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Mel windows for video frames at ``times`` (silence outside the signal)."""
        w = self.window
        la = w.mel_start + w.mel_frames / audio.MEL_FPS
        return np.stack([audio.mel_window(mel, float(t), la, w.mel_frames) for t in times]).astype(np.float32)

    def embed_clip(self, crops: np.ndarray, mel: np.ndarray, times: np.ndarray, batch: int = 64) -> ClipEmbeddings:
        """Per-frame video and audio embeddings of a clip (one per full video window)."""
        vw = self.video_windows(crops)
        aw = self.audio_windows(mel, times[: len(vw)])
        v = _batched(self.embed_video, vw, batch)
        a = _batched(self.embed_audio, aw, batch)
        return ClipEmbeddings(v, a)


@dataclass(frozen=True)
class ClipEmbeddings:
    video: np.ndarray  # (N, E)
    audio: np.ndarray  # (N, E)


@dataclass(frozen=True)
class SyncScores:
    lse_d: float
    lse_c: float
    offset: int  # frames; > 0: the audio leads the video
    distances: np.ndarray  # (2·vshift+1,) mean distance per offset k = −vshift…+vshift


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _batched(fn: object, x: np.ndarray, batch: int) -> np.ndarray:
    assert callable(fn)
    if len(x) == 0:
        return np.zeros((0, 0), np.float32)
    return np.concatenate([np.asarray(fn(x[s : s + batch]), np.float32) for s in range(0, len(x), batch)])


def offset_distances(
    video: np.ndarray, audio_emb: np.ndarray, vshift: int = VSHIFT, valid_only: bool = False
) -> np.ndarray:
    """syncnet_python's calc_pdist, averaged over frames: (2·vshift+1,) mean distances, where
    entry j pairs video frame i with audio frame i + j − vshift (zero vector outside the clip,
    as syncnet_python pads). ``valid_only`` averages each offset over the frames that have a
    real audio partner instead (not syncnet_python; less biased on short clips)."""
    v = np.asarray(video, np.float64)
    a = np.asarray(audio_emb, np.float64)
    n = min(len(v), len(a))
    if n == 0:
        raise ValueError("no frames to compare")
    v, a = v[:n], a[:n]
    pad = np.zeros((vshift, a.shape[1]))
    ap = np.concatenate([pad, a, pad])
    win = 2 * vshift + 1
    idx = np.arange(n)[:, None] + np.arange(win)[None, :]  # (n, win)
    d = np.linalg.norm(v[:, None, :] - ap[idx] + _PDIST_EPS, axis=-1)
    if not valid_only:
        return d.mean(axis=0)
    real = (idx >= vshift) & (idx < vshift + n)
    return np.asarray((d * real).sum(0) / np.maximum(real.sum(0), 1))


def lse(video: np.ndarray, audio_emb: np.ndarray, vshift: int = VSHIFT, valid_only: bool = False) -> SyncScores:
    """LSE-D, LSE-C and the AV offset over offsets −vshift…+vshift (syncnet_python)."""
    md = offset_distances(video, audio_emb, vshift, valid_only)
    j = int(np.argmin(md))
    return SyncScores(float(md[j]), float(np.median(md) - md[j]), vshift - j, md)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    if n == 0:
        return float("nan")
    return float(np.mean(np.sum(_unit(a[:n]) * _unit(b[:n]), axis=1)))


def avs_u(emb: ClipEmbeddings) -> float:
    """Audio vs video of one clip."""
    return mean_cosine(emb.video, emb.audio)


def avs_v(generated: ClipEmbeddings, truth: ClipEmbeddings) -> float:
    """Video vs video: the generated clip against the ground truth."""
    return mean_cosine(generated.video, truth.video)


def avs_m(generated: np.ndarray, truth: np.ndarray) -> float:
    """Multimodal vs multimodal (embeddings from :meth:`AVExpert.embed_multimodal`)."""
    return mean_cosine(generated, truth)


def video_input(windows: np.ndarray) -> np.ndarray:
    """(B, F, S, S, 3) uint8 -> (B, 3F, S/2, S) float32 in [0, 1]: the lower half, frames
    stacked on channels (the training layout, training/train_sync.py)."""
    s = windows.shape[2]
    x = windows[:, :, s // 2 :].astype(np.float32) / 255.0
    b, f, h, w, c = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(b, f * c, h, w))


def default_expert_dir() -> Path:
    """The shipped lip-sync expert: engines/syncnet in a source tree, the package's copy in
    an installed rtdub (rtdub.model.ENGINES_DIR)."""
    return ENGINES_DIR / "syncnet"


class SyncNetExpert(AVExpert):
    """The project's lip-sync expert: two ONNX encoders and a manifest."""

    def __init__(self, path: str | Path | None = None, threads: int = 2) -> None:
        from ..backends.onnx import make_session

        root = Path(path) if path is not None else default_expert_dir()
        mf = root / "manifest.json"
        if not mf.is_file():
            raise ModelError(f"{root}: not a lip-sync expert bundle (no manifest.json)")
        try:
            m = json.loads(mf.read_text())
            self.window = ExpertWindow(
                frames=int(m["frames"]),
                crop_size=int(m["crop_size"]),
                mel_frames=int(m["mel_frames"]),
                mel_start=float(m["mel_start"]),
            )
            vfile, afile = root / m["video"]["file"], root / m["audio"]["file"]
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{mf}: malformed manifest ({exc})") from exc
        self.manifest = m
        self._video = make_session(str(vfile), threads)
        self._audio = make_session(str(afile), threads)

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        out = self._video.run(["embedding"], {"frames": video_input(frames)})  # type: ignore[attr-defined]
        return np.asarray(out[0], np.float32)

    def embed_audio(self, mels: np.ndarray) -> np.ndarray:
        out = self._audio.run(["embedding"], {"mel": np.ascontiguousarray(mels, np.float32)})  # type: ignore[attr-defined]
        return np.asarray(out[0], np.float32)
