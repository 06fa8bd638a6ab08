"""The lip-sync expert (SyncNet as used by Wav2Lip; docs/design.md §3), in torch (training only).

Video side: 5 consecutive RGB frames of the lower half of the aligned face crop, stacked on
channels (15 × S/2 × S, i.e. 15 × 48 × 96 at S = 96). Audio side: the 80 × 16 mel window
(200 ms) that starts at the first of those frames (:func:`mel_at` cuts it from a prepared
clip, for training the expert and for the generator's sync loss). Each side has a small conv
encoder ending in a ReLU, and the embedding is L2-normalised, so cos(v, a) lies in [0, 1] and
P_sync = max(cos, ε) is a probability the BCE loss can use directly (Wav2Lip's trick).

The runtime (rtdub/measure/avsync.py) runs the two encoders' ONNX exports (engines/export_sync.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rtdub import audio

if TYPE_CHECKING:
    from .data import Clip


@dataclass(frozen=True)
class SyncConfig:
    crop_size: int = 96  # aligned crop side; the expert sees its lower half
    frames: int = 5  # video frames per window
    mel_frames: int = 16  # 200 ms of mel, starting at the first video frame
    n_mels: int = 80
    embed: int = 256
    width: int = 24  # channels of the first conv; doubled at each stride-2 stage (capped)
    eps: float = 1e-6  # P_sync floor
    # inside the video graph (the ONNX input stays (B, 3·frames, S/2, S) RGB in [0, 1]):
    gray: bool = False  # luma only: colour carries identity, not sync
    downsample: int = 1  # average-pool the input by this factor (1 or 2): less identity detail
    standardize: bool = False  # zero mean, unit variance per window: brightness/contrast-free
    lip_targets: int = 0  # >0: a linear head on the video features predicts lip geometry
    audio_lip_targets: int = 0  # >0: the same from the audio features (training only)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def mel_at(clip: Clip, t: float, cfg: SyncConfig) -> np.ndarray:
    """The expert's mel window for a video window starting at time ``t``: [t, t + 200 ms),
    read ``clip.audio_lag`` later when the clip's sound is known to lag its picture."""
    return audio.mel_window(clip.mel, t + clip.audio_lag, cfg.mel_frames / audio.MEL_FPS, cfg.mel_frames)


def _conv(
    cin: int, cout: int, k: int | tuple[int, int], s: int | tuple[int, int], p: int | tuple[int, int]
) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Res(nn.Module):
    """conv-BN + identity, then ReLU (Wav2Lip's residual conv)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x) + x)


LUMA = (0.299, 0.587, 0.114)


class VideoEncoder(nn.Module):
    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        if cfg.downsample not in (1, 2):
            raise ValueError(f"downsample must be 1 or 2, not {cfg.downsample}")
        self.cfg = cfg
        w = cfg.width
        c = [w, 2 * w, 4 * w, 6 * w]
        cin = (1 if cfg.gray else 3) * cfg.frames
        # the first conv halves the resolution, unless the input was already pooled by 2
        self.net = nn.Sequential(
            _conv(cin, c[0], 5, 2 // cfg.downsample, 2),  # 48×96 -> 24×48
            _conv(c[0], c[1], 3, (1, 2), 1),  # 24×24
            _Res(c[1]),
            _conv(c[1], c[2], 3, 2, 1),  # 12
            _Res(c[2]),
            _conv(c[2], c[3], 3, 2, 1),  # 6
            _Res(c[3]),
            _conv(c[3], c[3], 3, 2, 1),  # 3
            nn.Conv2d(c[3], cfg.embed, 3, 1, 0),  # 1
            nn.ReLU(),
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The in-graph input transform (identity with the default config)."""
        c = self.cfg
        if c.gray:
            b, _, h, w = x.shape
            rgb = x.view(b, c.frames, 3, h, w)
            x = rgb[:, :, 0] * LUMA[0] + rgb[:, :, 1] * LUMA[1] + rgb[:, :, 2] * LUMA[2]
        if c.downsample > 1:
            x = F.avg_pool2d(x, c.downsample)
        if c.standardize:
            mu = x.mean(dim=(1, 2, 3), keepdim=True)
            sd = (x - mu).pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-4).sqrt()
            x = (x - mu) / sd
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 15, S/2, S) in [0, 1] -> (B, E) unnormalised, non-negative."""
        return self.net(self.prepare(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 15, S/2, S) in [0, 1] -> (B, E) L2-normalised, non-negative."""
        return F.normalize(self.features(x), dim=1, eps=1e-8)


class AudioEncoder(nn.Module):
    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        w = cfg.width
        c = [w, 2 * w, 4 * w, 6 * w]
        self.net = nn.Sequential(
            _conv(1, c[0], 3, 1, 1),  # 80×16
            _Res(c[0]),
            _conv(c[0], c[1], 3, (3, 1), 1),  # 27×16
            _Res(c[1]),
            _conv(c[1], c[2], 3, 3, 1),  # 9×6
            _Res(c[2]),
            _conv(c[2], c[3], 3, (3, 2), 1),  # 3×3
            nn.Conv2d(c[3], cfg.embed, 3, 1, 0),  # 1×1
            nn.ReLU(),
        )

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, 16, 80) in [-4, 4] (time, bins, as rtdub.audio makes it) -> (B, E)
        unnormalised, non-negative."""
        return self.net(mel.transpose(1, 2).unsqueeze(1)).flatten(1)  # conv input (B, 1, 80, 16)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, 16, 80) -> (B, E) L2-normalised, non-negative."""
        return F.normalize(self.features(mel), dim=1, eps=1e-8)


class SyncNet(nn.Module):
    def __init__(self, cfg: SyncConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.video = VideoEncoder(cfg)
        self.audio = AudioEncoder(cfg)
        # training-only auxiliary heads (not exported): lip geometry from the video features
        self.lip_head = nn.Linear(cfg.embed, cfg.lip_targets) if cfg.lip_targets > 0 else None
        # and from the audio features: the audio side must carry the mouth's geometry too
        self.audio_lip_head = nn.Linear(cfg.embed, cfg.audio_lip_targets) if cfg.audio_lip_targets > 0 else None

    def forward(self, frames: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """P_sync (B,) = max(cos(video, audio), ε)."""
        return sync_probability(self.video(frames), self.audio(mel), self.cfg.eps)


def sync_probability(v: torch.Tensor, a: torch.Tensor, eps: float) -> torch.Tensor:
    return (v * a).sum(1).clamp(min=eps, max=1.0)


def sync_loss(p: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE on P_sync: −log P for in-sync pairs, −log(1 − P) for off-sync ones."""
    return F.binary_cross_entropy(p.clamp(max=1 - 1e-6), label)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
