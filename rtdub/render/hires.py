"""High-resolution compositing: the generator's fields applied to a larger crop.

The generator works on S×S crops (96 px) but its face is ``alpha * warp(ref, flow) + (1 -
alpha) * colour``, and the flow is in grid units, independent of the resolution. Pasting the
S px face into a frame where the face spans 300-600 px upscales it several times and blurs
teeth and lip edges. Here the same fields (the bundle's ``fields`` output, see
engines/export.py) are upsampled to R×R and applied to an R px crop of the identity reference
taken from the original frame, so the reference's texture keeps the frame's resolution.

Geometry: an R px crop covers exactly the canonical region of the S px crop, so pixel ``j``
of the R crop is at pixel ``j * S / R`` of the S crop (``align.canonical_to_crop`` scales
linearly with the size). Fields are resampled with that mapping, not ``cv2.resize``'s
half-pixel convention, so at R = S everything reduces to the generator's own composition.

Fine detail (``detail``): the colour term is only S px sharp, so wherever the generator mixes
some of it in (alpha ≈ 0.9 over most of the mouth) it also mixes out that share of the
reference's texture. With ``detail`` > 0 the share is put back: the warped reference's detail
above the S grid's resolution (the reference minus a Gaussian blur of ``DETAIL_SIGMA`` S px)
is added with weight ``detail * (1 - alpha)``, faded out where alpha falls from
``DETAIL_ALPHA[1]`` to ``DETAIL_ALPHA[0]``: there the generator paints what the reference does
not have (an open mouth's interior over a closed reference), and the reference's edges would
show through as ghosts. At alpha 1 the term vanishes; the colour's low frequencies are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..defaults import DEFAULT_DETAIL
from ..face.align import Alignment
from ..model import FieldLayout
from . import blend
from .blend import FaceMask, PasteRegion

DEFAULT_FIELDS = FieldLayout()

# interpolation of the reference texture: bilinear blurs most; Lanczos (8×8 taps) keeps most
KERNELS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
DETAIL_SIGMA = 0.5  # S px: the blur that leaves what the S grid can carry (its Nyquist band)
DETAIL_ALPHA = (0.6, 0.9)  # mixing weights over which the detail fades in


def detail_weight(alpha: np.ndarray, detail: float) -> np.ndarray:
    """Weight of the reference's fine detail added back at mixing weight ``alpha``:
    ``detail * (1 - alpha)``, faded to 0 below ``DETAIL_ALPHA`` (see the module docstring)."""
    lo, hi = DETAIL_ALPHA
    a = np.asarray(alpha, np.float32)
    ramp = np.clip((a - np.float32(lo)) * np.float32(1 / (hi - lo)), 0.0, 1.0)
    return np.float32(detail) * (1.0 - a) * ramp


def scaled(al: Alignment, size: int) -> Alignment:
    """The alignment of the same face to a ``size`` px crop of the same canonical region."""
    if size == al.size:
        return al
    return Alignment(al.matrix * (size / al.size), size)


def native_size(al: Alignment) -> float:
    """Frame pixels spanned by the crop's side: the resolution the frame has to offer."""
    return al.size / max(al.scale, 1e-9)


def _rescale_matrix(src: int, dst: int) -> np.ndarray:
    """Inverse map (dst pixel -> src pixel) between two crops of the same region."""
    k = src / dst
    return np.array([[k, 0.0, 0.0], [0.0, k, 0.0]])


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """A crop resampled to ``size`` px with the crops' geometry (bilinear; edges replicated).

    Works on any number of channels; returns the input itself when the size already fits."""
    src = crop.shape[0]
    if src == size:
        return crop
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    m = _rescale_matrix(src, size)
    if crop.ndim == 3 and crop.shape[2] > 4:  # warpAffine takes at most 4 channels
        parts = [
            cv2.warpAffine(crop[..., i : i + 4], m, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            for i in range(0, crop.shape[2], 4)
        ]
        return np.concatenate([p if p.ndim == 3 else p[..., None] for p in parts], axis=2)
    out = cv2.warpAffine(crop, m, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return out if out.ndim == crop.ndim else out[..., None]


def composite_into(
    frame: np.ndarray,
    reference: np.ndarray,
    fields: np.ndarray,
    al: Alignment,
    mask: FaceMask,
    interpolation: int = cv2.INTER_CUBIC,
    offset: np.ndarray | None = None,
    detail: float = 0.0,
    layout: FieldLayout = DEFAULT_FIELDS,
) -> PasteRegion | None:
    """The face ``alpha * warp(reference, flow) + (1 - alpha) * colour`` at the reference's
    resolution R, from fields predicted at S, pasted back in one resampling of the reference.

    ``frame`` (H, W, 3) uint8 is blended in place, like pasting an R px face made of the fields
    with ``blend.paste``, but each frame pixel maps through the alignment and the flow straight into
    ``reference`` (R, R, 3; ``al`` and ``mask`` are at R), so the reference's texture is
    interpolated once instead of twice (once into the R crop, once into the frame): the
    second interpolation is what blurs teeth and lip edges most. The fields (6, S, S) and the
    mask are sampled bilinearly at the same frame pixels; ``offset`` (3,) is the colour shift
    added to the face before blending; ``detail`` puts back the reference's fine detail under
    the colour term (module docstring). Returns the touched region, or None when the mask falls
    outside the frame."""
    r = reference.shape[0]
    if reference.ndim != 3 or reference.shape[1:] != (r, 3) or al.size != r or mask.soft.shape[0] != r:
        raise ValueError(f"reference {reference.shape}, alignment {al.size} and mask must share the size R")
    if fields.ndim != 3 or fields.shape[0] != layout.count or fields.shape[1] != fields.shape[2]:
        raise ValueError(f"fields must be ({layout.count}, S, S), got {fields.shape}")
    h, w = frame.shape[:2]
    box = blend.paste_box(w, h, al, mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    size = (x1 - x0, y1 - y0)
    s = fields.shape[1]
    m = al.matrix.astype(np.float64).copy()  # box pixel -> R crop pixel
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    ms = m * (s / r)  # box pixel -> S field pixel (pixel j of R is pixel j * S / R of S)
    inv = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    weight = cv2.warpAffine(mask.soft, m, size, flags=inv, borderValue=0.0)
    if not weight.any():
        return PasteRegion(x0, y0, weight)
    f = np.asarray(fields, np.float32)
    # flow x, flow y and alpha resampled together (motion[..., 0:2] the flow, [..., 2:3] alpha)
    sampled = np.ascontiguousarray(f[list(layout.sampled)].transpose(1, 2, 0))
    motion = cv2.warpAffine(sampled, ms, size, flags=inv, borderMode=cv2.BORDER_REPLICATE)
    a = layout.alpha
    synth = np.ascontiguousarray(((1.0 - f[a : a + 1]) * f[list(layout.colour)] * 255.0).transpose(1, 2, 0))
    synth = cv2.warpAffine(synth, ms, size, flags=inv, borderMode=cv2.BORDER_REPLICATE)
    xs = np.arange(size[0], dtype=np.float32)[None, :]
    ys = np.arange(size[1], dtype=np.float32)[:, None]
    k = np.float32((s - 1) / 2 * (r / s))  # flow in grid units (align_corners=True at S), in R pixels
    map_x = motion[..., 0] * k + (np.float32(m[0, 0]) * xs + np.float32(m[0, 1]) * ys + np.float32(m[0, 2]))
    map_y = motion[..., 1] * k + (np.float32(m[1, 0]) * xs + np.float32(m[1, 1]) * ys + np.float32(m[1, 2]))
    face = cv2.remap(np.asarray(reference, np.float32), map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
    fine = None
    if detail > 0:  # the warped reference's detail above the S grid, before alpha scales it
        sigma = DETAIL_SIGMA * r / (s * max(float(np.sqrt(abs(np.linalg.det(m[:, :2])))), 1e-9))  # S px in box px
        taps = 2 * int(np.ceil(2.5 * sigma)) + 1  # to 2.5 sigma: half of OpenCV's float default, ~1 % off
        fine = face - cv2.GaussianBlur(face, (taps, taps), sigma)
        fine *= detail_weight(motion[..., 2:3], detail)
    face *= motion[..., 2:3]
    face += synth
    if fine is not None:
        face += fine
    if offset is not None:
        face += np.asarray(offset, np.float32)
    blend.mix_into(frame[y0:y1, x0:x1], face, weight)
    return PasteRegion(x0, y0, weight)


def crop(frame: np.ndarray, al: Alignment, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """The aligned crop of ``frame`` at ``al.size`` px, bicubic by default: it is resampled
    once more (:func:`composite_into`), so this step should lose as little as it can."""
    return cv2.warpAffine(frame, al.matrix, (al.size, al.size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)


def scaled_mask(mask: FaceMask, size: int) -> FaceMask:
    """The lower-face mask of an S px crop resampled to ``size`` px (bilinear: the feathered
    weight is smooth). It covers exactly the S paste's region, and costs well under a
    millisecond, where ``blend.face_mask(size)`` rasterises the polygon again (tens of ms at
    R = 384, a hiccup on the first frame of every new render size)."""
    if mask.soft.shape[0] == size:
        return mask
    soft = np.clip(resize_crop(mask.soft, size), 0.0, 1.0).astype(np.float32)
    soft[[0, -1], :] = 0.0  # the weight reaches zero before the crop ends, as at S
    soft[:, [0, -1]] = 0.0
    hidden = resize_crop(mask.hidden.astype(np.float32), size) > 0.5
    ys, xs = np.nonzero(soft > 0)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    for x in (soft, hidden):
        x.setflags(write=False)
    return FaceMask(soft, hidden, bbox)


@dataclass(frozen=True)
class RenderSizeConfig:
    """How big the hi-res crop is.

    ``size`` 0 picks it per face: the frame pixels the crop spans (``native_size``) times
    ``oversample``, rounded to ``step``, between the bundle's crop size and ``max_size``; it only
    changes when the face's size moved by more than a step, so it does not flicker. A positive
    ``size`` fixes it; the bundle's crop size turns hi-res compositing off."""

    size: int = 0
    max_size: int = 384
    step: int = 32
    oversample: float = 1.0
    # the reference's crop and its warp into the frame, one of KERNELS: Lanczos keeps the most
    # texture (training/ABLATION.md) and costs ~50 % more compositing than bicubic
    kernel: str = "lanczos"
    # the reference's fine detail put back under the colour term, 0..1 (module docstring);
    # streams default to STREAM_DETAIL (rtdub/defaults.py)
    detail: float = DEFAULT_DETAIL

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {self.kernel!r}")
        problem = detail_problem(self.detail)
        if problem is not None:
            raise ValueError(f"detail {problem}")

    @property
    def interpolation(self) -> int:
        return KERNELS[self.kernel]


def detail_problem(detail: float) -> str | None:
    """Why ``detail`` is not a valid detail gain (None: it is)."""
    if not 0.0 <= detail <= 1.0:
        return f"must be between 0 and 1, got {detail}"
    return None


def render_size_problem(size: int, crop_size: int) -> str | None:
    """Why ``size`` is not a valid render size for a bundle with ``crop_size`` px crops (None:
    it is): 0 picks it per face, anything else must be at least the crop size."""
    if size < 0 or 0 < size < crop_size:
        return f"must be 0 (automatic) or at least the model's crop size {crop_size}, got {size}"
    return None


class RenderSizer:
    """Per-stream render-size choice with hysteresis (see :class:`RenderSizeConfig`)."""

    def __init__(self, config: RenderSizeConfig, crop_size: int) -> None:
        problem = render_size_problem(config.size, crop_size)
        if problem is not None:
            raise ValueError(f"render size {problem}")
        self.config = config
        self.crop_size = crop_size
        self._current: int | None = None

    def reset(self) -> None:
        self._current = None

    def size_for(self, al: Alignment) -> int:
        c = self.config
        if c.size > 0:
            return c.size
        lo, hi = self.crop_size, max(self.crop_size, c.max_size)
        want = native_size(al) * c.oversample
        if self._current is None or abs(want - self._current) > c.step:
            self._current = int(min(hi, max(lo, round(want / c.step) * c.step)))
        return self._current
