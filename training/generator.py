"""Training the lip-to-face generator: batches and the reconstruction loss (a library module:
training/train_gen.py trains the generic generator with them, rtdub enroll fine-tunes it on one
person).

A sample is the crop of frame t with its lower face hidden (pose), a reference crop of the same
person (identity), the true lip-motion units of frames t-4..t, and the crop of t as the target.
The loss is L1 weighted towards the mouth plus an L1 on image gradients inside the mouth mask.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from rtdub.render.blend import face_mask

from .data import Clip, context_units, reference_index
from .models import GenConfig

# a reference crop (S, S, 3) uint8 for the target frame i of a clip
ReferencePick = Callable[[Clip, int, np.random.Generator], np.ndarray]


def jitter(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Small random similarity warp: the reference is never perfectly aligned at run time."""
    s = img.shape[0]
    ang = rng.uniform(-3, 3) * amount
    sc = 1 + rng.uniform(-0.03, 0.03) * amount
    tx, ty = rng.uniform(-0.03, 0.03, size=2) * s * amount
    m = cv2.getRotationMatrix2D((s / 2, s / 2), ang, sc)
    m[:, 2] += (tx, ty)
    return cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def make_batch(
    clips: list[Clip],
    weights: np.ndarray,
    n: int,
    cfg: GenConfig,
    rng: np.random.Generator,
    aug: bool = True,
    pick_reference: ReferencePick | None = None,
) -> tuple[torch.Tensor, ...]:
    """``n`` samples (pose, reference, units of t-4..t, target), clips drawn by ``weights``, a
    face frame of the clip uniformly. The reference is another frame at least 1 s away
    (:func:`training.data.reference_index`), or what ``pick_reference`` gives; jittered
    (:func:`jitter`) and, with ``aug``, the same photometric change on all three images."""
    hidden = face_mask(cfg.size).hidden
    pose, ref, tgt, units = [], [], [], []
    for _ in range(n):
        c = clips[rng.choice(len(clips), p=weights)]
        i = int(rng.choice(np.nonzero(c.valid)[0]))
        r_src = c.crops[reference_index(c, i, rng)] if pick_reference is None else pick_reference(c, i, rng)
        t_img = c.crops[i].copy()
        r_img = jitter(r_src, rng, 1.0) if aug else r_src
        p_img = t_img.copy()
        p_img[hidden] = 0
        pose.append(p_img)
        ref.append(r_img)
        tgt.append(t_img)
        units.append(context_units(c, i, cfg.context))

    def to_t(xs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255

    p, r, t = to_t(pose), to_t(ref), to_t(tgt)
    if aug:  # the same photometric change on all three images
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, size=(n, 3, 1, 1)).astype(np.float32))
        bias = torch.from_numpy(rng.uniform(-0.05, 0.05, size=(n, 1, 1, 1)).astype(np.float32))
        p, r, t = ((x * gain + bias).clamp(0, 1) for x in (p, r, t))
        p = p * (1 - torch.from_numpy(hidden.astype(np.float32)))
    u = torch.from_numpy(np.stack(units).astype(np.float32))
    return p, r, u, t


def mouth_box(x: torch.Tensor, size: int) -> torch.Tensor:
    x0, y0, x1, y1 = face_mask(size).bbox
    return x[..., y0:y1, x0:x1]


def grad_l1(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return ((dxa - dxb).abs() * w[..., :, 1:]).mean() + ((dya - dyb).abs() * w[..., 1:, :]).mean()


GRAD_WEIGHT = 2.0  # image-gradient L1 beside the plain L1


def face_loss(out: torch.Tensor, target: torch.Tensor, wmap: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The reconstruction loss: L1 weighted towards the mouth (``wmap``) plus the gradient L1
    inside the mouth mask (``soft``). Against the teacher's face it is the distillation term."""
    return ((out - target).abs() * wmap).mean() + GRAD_WEIGHT * grad_l1(out, target, soft)


def laplacian_var(img: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(g.astype(np.float64), cv2.CV_64F).var())
