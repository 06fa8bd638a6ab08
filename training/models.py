"""The two trainable stages, in torch (training only; the runtime runs their ONNX exports).

AudioToLip: a mel window that ends ``lookahead`` seconds after the frame -> lip-motion units.
    The lookahead is an input, so one model serves every configured lookahead.
ContextA2L (``arch="cals"``): the same interface with a context-aware encoder over a long
    window (CALS: about 1.2 s of past audio), pretrainable by masked prediction. With
    ``future`` > 0 it is a teacher that also sees that much audio after the frame.
LipToFace: the causal five-frame generator. Masked pose crop of frame t, an identity
    reference crop and the units of frames t-4..t -> the face crop of frame t. It warps the
    reference's own pixels with a predicted flow field and mixes in synthesised pixels where
    the reference has nothing to offer (teeth, the inside of an opened mouth), which keeps
    texture sharp at small data sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rtdub.model import FIELD_CHANNELS


@dataclass(frozen=True)
class A2LConfig:
    n_mels: int = 80
    window: int = 24  # mel frames (300 ms)
    units: int = 9
    width: int = 128
    max_lookahead: float = 0.12  # seconds, the range the model was trained on
    arch: str = "conv"  # "conv": AudioToLip; "cals": ContextA2L
    layers: int = 4  # cals: residual dilated conv blocks
    attn_layers: int = 1  # cals: self-attention layers over the window
    future: float = 0.0  # teacher: fixed seconds of audio after the frame (replaces lookahead)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def replace(self, **kw: object) -> A2LConfig:
        return dataclasses.replace(self, **kw)  # type: ignore[arg-type]

    @staticmethod
    def for_arch(arch: str) -> A2LConfig:
        """Defaults per architecture: conv (the runtime default), cals (causal, 1.3 s window:
        at least 1.18 s of past audio at every lookahead), teacher (the conv model on a 600 ms
        window centred on the frame: 0.3 s of future audio)."""
        if arch == "conv":
            return A2LConfig()
        if arch == "cals":
            return A2LConfig(arch="cals", window=104, width=64)
        if arch == "teacher":
            return A2LConfig(window=48, future=0.3)
        raise ValueError(f"unknown audio-to-lip architecture {arch!r}")

    def input_lookahead(self, lookahead: float) -> float:
        """Where the mel window ends after the frame: the lookahead, or a teacher's fixed future."""
        return self.future if self.future > 0 else lookahead


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


class _TemporalBlock(nn.Module):
    """Pre-norm residual block: dilated conv (kernel 3) over time, GELU, pointwise."""

    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.conv = nn.Conv1d(c, c, 3, dilation=dilation, padding=dilation)
        self.pw = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.pw(F.gelu(h))


class _AttnBlock(nn.Module):
    """Pre-norm multi-head self-attention over the window plus a feed-forward layer."""

    def __init__(self, c: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.ff = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        a = torch.softmax((q @ k.transpose(-1, -2)) * (c // h) ** -0.5, dim=-1)
        x = x + self.proj((a @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.ff(self.norm2(x))


class ContextA2L(nn.Module):
    """Context-aware audio-to-lip (CALS): mel window -> 50 ms steps (4 mel frames each) ->
    dilated temporal convs -> self-attention over the whole window -> the step at the frame
    (the last one for a causal model, whose window ends ``lookahead`` after the frame) plus
    the lookahead -> units. The window holds only past audio and the lookahead, so the model
    is causal in the stream; with ``future`` > 0 (a teacher) it also sees that much future.

    ``masked_loss`` is the self-supervised pretraining: spans of steps are replaced by a
    learned mask vector and the clean log-mel of each masked step is predicted (L1)."""

    STEP = 4  # mel frames per step

    def __init__(self, cfg: A2LConfig) -> None:
        super().__init__()
        if cfg.window % self.STEP:
            raise ValueError(f"window {cfg.window} must be a multiple of {self.STEP}")
        self.cfg = cfg
        c = cfg.width
        steps = cfg.window // self.STEP
        self.embed = nn.Conv1d(cfg.n_mels, c, self.STEP, stride=self.STEP)
        self.pos = nn.Parameter(torch.zeros(1, steps, c))
        self.mask_emb = nn.Parameter(torch.zeros(c))
        self.blocks = nn.ModuleList([_TemporalBlock(c, 2**i) for i in range(cfg.layers)])
        self.attn = nn.ModuleList([_AttnBlock(c) for _ in range(cfg.attn_layers)])
        self.norm = nn.LayerNorm(c)
        self.out_index = steps - 1 - int(round(cfg.future * 80 / self.STEP))
        self.head = nn.Sequential(nn.Linear(c + 1, 256), nn.GELU(), nn.Dropout(0.2), nn.Linear(256, cfg.units))
        self.mlm = nn.Linear(c, cfg.n_mels * self.STEP)

    def features(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """mel (B, W, 80) -> (B, W/4, C); ``mask`` (B, W/4) bool replaces steps by the mask vector."""
        x = self.embed(mel.transpose(1, 2)).transpose(1, 2)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)
        x = x + self.pos
        for blk in self.blocks:
            x = blk(x)
        for att in self.attn:
            x = att(x)
        return self.norm(x)

    def forward(self, mel: torch.Tensor, lookahead: torch.Tensor) -> torch.Tensor:
        """mel (B, W, 80), lookahead (B, 1) seconds -> units (B, U)."""
        h = self.features(mel)[:, self.out_index]
        return self.head(torch.cat([h, lookahead / self.cfg.max_lookahead], dim=1))

    def masked_loss(self, mel: torch.Tensor, gen: torch.Generator, prob: float, span: int = 3) -> torch.Tensor:
        b, w, m = mel.shape
        t = w // self.STEP
        starts = torch.rand(b, t, generator=gen) < prob
        mask = starts.clone()
        for k in range(1, span):
            mask[:, k:] |= starts[:, :-k]
        if not mask.any():
            mask[:, -1] = True
        pred = self.mlm(self.features(mel, mask))
        target = mel.reshape(b, t, self.STEP * m)
        return (pred - target).abs().mean(-1)[mask].mean()


def build_a2l(cfg: A2LConfig) -> nn.Module:
    if cfg.arch == "conv":
        return AudioToLip(cfg)
    if cfg.arch == "cals":
        return ContextA2L(cfg)
    raise ValueError(f"unknown audio-to-lip architecture {cfg.arch!r}")


@dataclass(frozen=True)
class GenConfig:
    size: int = 96
    units: int = 9
    context: int = 5  # frames of units, t-4..t
    base: int = 24  # channels at full resolution
    max_flow: float = 0.25  # max displacement, in [-1, 1] grid units
    # a second colour head at full resolution S, fed the input crops as well (residual on the
    # S/2 colour; starts equal to it): the colour is otherwise only S/2 sharp
    full_colour: bool = False

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


def _field_slice(first: str, last: str) -> slice:
    return slice(FIELD_CHANNELS.index(first), FIELD_CHANNELS.index(last) + 1)


# The channels of LipToFace.fields are rtdub.model.FIELD_CHANNELS, in that order (the one
# definition: the export declares it in the manifest, the runtime reads the fields by it).
# Their groups, in the fields and in the generator head's output alike:
FIELD_FLOW = _field_slice("flow_x", "flow_y")
FIELD_ALPHA = _field_slice("alpha", "alpha")
FIELD_RGB = _field_slice("red", "blue")


class LipToFace(nn.Module):
    def __init__(self, cfg: GenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.base
        chans = [c, 2 * c, 4 * c, 8 * c]
        # every encoder level halves the resolution: S/2, S/4, S/8, S/16
        self.enc = nn.ModuleList([_block(6, chans[0], 2)] + [_block(chans[i - 1], chans[i], 2) for i in range(1, 4)])
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
        self.head = nn.Conv2d(chans[0], len(FIELD_CHANNELS), 3, padding=1)  # flow (2), alpha (1), rgb (3) at S/2
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None
        nn.init.zeros_(self.head.bias)
        self.colour_head: nn.Sequential | None = None
        if cfg.full_colour:
            last = nn.Conv2d(chans[0], 3, 3, padding=1)
            nn.init.zeros_(last.weight)
            assert last.bias is not None
            nn.init.zeros_(last.bias)
            self.colour_head = nn.Sequential(
                nn.Conv2d(chans[0] + 6, chans[0], 3, padding=1), nn.ReLU(inplace=True), last
            )
        lin = torch.linspace(-1, 1, cfg.size)
        ys, xs = torch.meshgrid(lin, lin, indexing="ij")
        self.grid: torch.Tensor
        self.register_buffer("grid", torch.stack([xs, ys], dim=-1).unsqueeze(0), persistent=False)

    def forward(self, pose: torch.Tensor, ref: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """pose, ref (B, 3, S, S) in [0, 1]; units (B, context, U) -> face (B, 3, S, S) in [0, 1].

        Flow, mixing weight and synthesised colour are predicted at S/2 and upsampled; the
        reference is warped at full resolution, so its texture stays sharp."""
        return self.compose(ref, self.fields(pose, ref, units))

    @staticmethod
    def alpha(fields: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S): the mixing weight channel of :meth:`fields` (1 = the warped reference)."""
        return fields[:, FIELD_ALPHA]

    def compose(self, ref: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        """alpha * warp(ref, flow) + (1 - alpha) * rgb, from :meth:`fields`."""
        flow, alpha, rgb = fields[:, FIELD_FLOW], self.alpha(fields), fields[:, FIELD_RGB]
        grid = self.grid + flow.permute(0, 2, 3, 1)
        warped = F.grid_sample(ref, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return alpha * warped + (1 - alpha) * rgb

    def fields(self, pose: torch.Tensor, ref: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """(B, 6, S, S): flow (x, y; grid units of ``grid_sample(align_corners=True)``), mixing
        weight alpha in [0, 1] (1 = the warped reference), synthesised colour in [0, 1].

        The flow is resolution-independent: the runtime can apply these fields to a
        higher-resolution crop of the reference (rtdub/render/hires.py)."""
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
        flow = torch.tanh(out[:, FIELD_FLOW]) * self.cfg.max_flow
        alpha = torch.sigmoid(out[:, FIELD_ALPHA] + 2.0)  # starts near "copy the reference"
        colour = out[:, FIELD_RGB]
        if self.colour_head is not None:
            full = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            colour = colour + self.colour_head(torch.cat([full, pose, ref], dim=1))
        rgb = torch.sigmoid(colour)
        return torch.cat([flow, alpha, rgb], dim=1)  # FIELD_CHANNELS


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class GeneratorWithFields(nn.Module):
    """The generator with its fields as a second output: what engines/export.py exports, and what
    train_gen.py trains through (its alpha term reads the fields)."""

    def __init__(self, gen: LipToFace) -> None:
        super().__init__()
        self.gen = gen

    def forward(self, pose: torch.Tensor, ref: torch.Tensor, units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fields = self.gen.fields(pose, ref, units)
        return self.gen.compose(ref, fields), fields
