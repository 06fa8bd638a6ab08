"""Seed losses for the lip-to-face generator (docs/design.md §3), used by training/train_gen.py.

Perceptual term: SSIM. The seed papers use VGG-19 features, whose weights are not available
here, and our own trained networks (the lip-sync expert, the generator's encoder) were
trained on ~175 s of faces, too little to trust their features as a perceptual metric. SSIM
(11×11 Gaussian window, σ = 1.5, per colour channel) needs no weights, compares local
luminance, contrast and structure, and is weighted here by the lower-face mask. MS-SSIM
is not used: the mouth box is ~60×44 px, too small for its coarser scales.

Adversarial term: a spectrally normalised patch discriminator on the mouth box, hinge loss.

Frequency term: the focal frequency loss (Jiang et al., ICCV 2021) on the mouth box. L1
training has a spectral bias: the coarse errors dominate it, and the fine ones (lip edges,
teeth) are averaged away. With F the orthonormal 2-D DFT of each channel,
    L_ff = mean(w · |F(a) − F(b)|²),   w = (|F(a) − F(b)| / max |F(a) − F(b)|)^α  (no gradient),
so each frequency is weighted by how badly it is rendered, per image; hard frequencies stay
weighted however small their share of the energy.

Sync terms, through the frozen lip-sync expert (training/syncnet.py): rendered frames
t..t+4, lower halves stacked on channels, go to its video encoder and the 200 ms mel window
starting at frame t to its audio encoder. ``sync_bce`` is Wav2Lip's −log P_sync with
P_sync = max(cos, ε). ``stabilized_sync_loss`` is L_ss of docs/design.md §3:
    L_ss = −log(1 − (|x−y| + ε) / (|x−y| + |y−d| + ε)),
x = AVSIM(generated, audio), y = AVSIM(ground truth, audio), d = AVSIM(identity reference,
audio). It is ≈ 0 when the generated window scores like the ground truth, log 2 when it
scores like the (static) identity reference, and grows without bound beyond that; unlike the
plain sync loss it does not reward a sync score above the ground truth's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from .common import load_checkpoint
from .syncnet import SyncConfig, SyncNet, sync_probability


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: torch.Tensor, b: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM of (B, C, H, W) images in [0, 1] (same-size output, reflect padding)."""
    c = a.shape[1]
    g = _gauss(size, sigma).to(a)
    kx = g.view(1, 1, 1, size).expand(c, 1, 1, size)
    ky = g.view(1, 1, size, 1).expand(c, 1, size, 1)
    pad = size // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))


def ssim_loss(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """1 − SSIM, averaged with ``weight`` (broadcastable to (B, 1, H, W)) when given."""
    m = ssim_map(a, b).mean(1, keepdim=True)
    if weight is None:
        return 1 - m.mean()
    w = weight.expand_as(m)
    return 1 - (m * w).sum() / w.sum().clamp(min=1e-8)


def focal_frequency_loss(a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """L_ff of the module docstring over the last two dimensions (``(..., H, W)``), per image
    (every leading index is an image channel; its weights are normalised by its own maximum)."""
    diff = torch.fft.fft2(a, norm="ortho") - torch.fft.fft2(b, norm="ortho")
    dist = diff.real**2 + diff.imag**2
    with torch.no_grad():
        w = dist ** (alpha / 2)  # |F(a) - F(b)|^alpha
        w = w / w.flatten(-2).amax(-1).clamp_min(1e-12)[..., None, None]
    return (w * dist).mean()


class PatchDiscriminator(nn.Module):
    """Spectrally normalised PatchGAN on the mouth box: (B, 3, h, w) in [0, 1] -> (B, 1, h/8, w/8)
    logits, one per overlapping patch. No normalisation layers besides spectral norm."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width

        def sn(cin: int, cout: int, k: int, s: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(cin, cout, k, s, k // 2 if s == 1 else 1))

        self.net = nn.Sequential(
            sn(3, w, 4, 2),
            nn.LeakyReLU(0.2),
            sn(w, 2 * w, 4, 2),
            nn.LeakyReLU(0.2),
            sn(2 * w, 4 * w, 4, 2),
            nn.LeakyReLU(0.2),
            sn(4 * w, 1, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def expert_video_input(frames: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, S, S) -> (B, 3F, S/2, S): lower halves, frames stacked on channels (the
    layout of rtdub.measure.avsync.video_input)."""
    b, f, c, s, _ = frames.shape
    return frames[:, :, :, s // 2 :].reshape(b, f * c, s - s // 2, s)


class SyncExpert(nn.Module):
    """A frozen lip-sync expert in torch, so that gradients reach the generator's pixels."""

    def __init__(self, model: SyncNet) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def cfg(self) -> SyncConfig:
        return self.model.cfg

    def train(self, mode: bool = True) -> SyncExpert:  # BatchNorm stays in eval mode
        return super().train(False)

    def avsim(self, frames: torch.Tensor, audio_emb: torch.Tensor) -> torch.Tensor:
        """P_sync (B,) of (B, F, 3, S, S) frames against precomputed audio embeddings."""
        return sync_probability(self.model.video(expert_video_input(frames)), audio_emb, self.cfg.eps)

    def audio(self, mel: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.audio(mel)


def load_expert(run: Path) -> SyncExpert:
    meta_path = run / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{run}: no lip-sync expert checkpoint (meta.json)")
    meta = json.loads(meta_path.read_text())
    cfg = SyncConfig(**meta["config"])
    model = SyncNet(cfg)
    load_checkpoint(run, model)
    return SyncExpert(model)


def sync_bce(p: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's generator sync loss: BCE of P_sync against 'in sync', i.e. mean −log P."""
    return -torch.log(p.clamp(min=1e-6)).mean()


def stabilized_sync_loss(x: torch.Tensor, y: torch.Tensor, d: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """L_ss of docs/design.md §3, averaged over the batch. x: AVSIM of the generated window (carries
    the gradient); y: of the ground truth; d: of the identity reference (both constants)."""
    y, d = y.detach(), d.detach()
    dx = (x - y).abs()
    r = (dx + eps) / (dx + (y - d).abs() + eps)
    return -torch.log((1 - r).clamp(min=1e-6)).mean()
