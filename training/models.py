"""The two trainable stages, in torch (training only; the runtime runs their ONNX exports).

AudioToLip: a mel window that ends ``lookahead`` seconds after the frame -> lip-motion units.
    The lookahead is an input, so one model serves every configured lookahead.
LipToFace: the causal five-frame generator. Masked pose crop of frame t, an identity
    reference crop and the units of frames t-4..t -> the face crop of frame t. It warps the
    reference's own pixels with a predicted flow field and mixes in synthesised pixels where
    the reference has nothing to offer (teeth, the inside of an opened mouth), which keeps
    texture sharp at small data sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class A2LConfig:
    n_mels: int = 80
    window: int = 24  # mel frames (300 ms)
    units: int = 9
    width: int = 128
    max_lookahead: float = 0.12  # seconds, the range the model was trained on

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class AudioToLip(nn.Module):
    def __init__(self, cfg: A2LConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        layers: list[nn.Module] = []
        for cin, stride in ((cfg.n_mels, 1), (w, 1), (w, 2), (w, 1), (w, 2)):  # time: W -> W/4
            layers += [nn.Conv1d(cin, w, 3, stride=stride, padding=1), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*layers)
        t = (cfg.window + 3) // 4
        self.head = nn.Sequential(
            nn.Linear(w * t + 1, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(256, cfg.units),
        )

    def forward(self, mel: torch.Tensor, lookahead: torch.Tensor) -> torch.Tensor:
        """mel (B, W, 80), lookahead (B, 1) seconds -> units (B, U)."""
        h = self.conv(mel.transpose(1, 2))
        h = torch.cat([h.flatten(1), lookahead / self.cfg.max_lookahead], dim=1)
        return self.head(h)


@dataclass(frozen=True)
class GenConfig:
    size: int = 96
    units: int = 9
    context: int = 5  # frames of units, t-4..t
    base: int = 24  # channels at full resolution
    max_flow: float = 0.25  # max displacement, in [-1, 1] grid units

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _FiLM(nn.Module):
    def __init__(self, emb: int, ch: int) -> None:
        super().__init__()
        self.lin = nn.Linear(emb, 2 * ch)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        g, b = self.lin(e).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + g) + b


class LipToFace(nn.Module):
    def __init__(self, cfg: GenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.base
        chans = [c, 2 * c, 4 * c, 8 * c]
        # every encoder level halves the resolution: S/2, S/4, S/8, S/16
        self.enc = nn.ModuleList(
            [_block(6, chans[0], 2)] + [_block(chans[i - 1], chans[i], 2) for i in range(1, 4)]
        )
        emb = 128
        self.units_mlp = nn.Sequential(
            nn.Linear(cfg.units * cfg.context, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, emb),
            nn.ReLU(inplace=True),
        )
        self.film = nn.ModuleList([_FiLM(emb, ch) for ch in chans])
        # decoder: upsample, concat the encoder skip, two convs; ends at S/2
        self.dec = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i], 1) for i in range(3)])
        self.head = nn.Conv2d(chans[0], 6, 3, padding=1)  # flow (2), alpha (1), rgb (3) at S/2
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None
        nn.init.zeros_(self.head.bias)
        lin = torch.linspace(-1, 1, cfg.size)
        ys, xs = torch.meshgrid(lin, lin, indexing="ij")
        self.grid: torch.Tensor
        self.register_buffer("grid", torch.stack([xs, ys], dim=-1).unsqueeze(0), persistent=False)

    def forward(self, pose: torch.Tensor, ref: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """pose, ref (B, 3, S, S) in [0, 1]; units (B, context, U) -> face (B, 3, S, S) in [0, 1].

        Flow, mixing weight and synthesised colour are predicted at S/2 and upsampled; the
        reference is warped at full resolution, so its texture stays sharp."""
        e = self.units_mlp(units.flatten(1))
        skips = []
        h = torch.cat([pose, ref], dim=1)
        for enc, film in zip(self.enc, self.film, strict=True):
            h = film(enc(h), e)
            skips.append(h)
        for i in range(2, -1, -1):
            h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = self.dec[i](torch.cat([h, skips[i]], dim=1))
        out = F.interpolate(self.head(h), scale_factor=2.0, mode="bilinear", align_corners=False)
        flow = torch.tanh(out[:, 0:2]) * self.cfg.max_flow
        alpha = torch.sigmoid(out[:, 2:3] + 2.0)  # starts near "copy the reference"
        rgb = torch.sigmoid(out[:, 3:6])
        grid = self.grid + flow.permute(0, 2, 3, 1)
        warped = F.grid_sample(ref, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return alpha * warped + (1 - alpha) * rgb


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
