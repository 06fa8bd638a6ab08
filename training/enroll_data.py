"""A person's footage for enrolment (rtdub enroll): tracking, the usable-footage checks, the
train/test split, the person's lip-unit statistics and the bank of identity references.
A library module (no torch): training/enroll.py runs the enrolment with it.

Usable frames: a face was tracked, only one face is in the picture (counted about once a
second with mediapipe's full-range detector; a second face at least a third of the height of
the largest counts), and the aligned crop spans at least ``min_face_px`` frame pixels (a
smaller face is upscaled to the 96 px crop: the model would learn a blurred mouth).

Units: the base bundle's lip basis; the person's z-score statistics are fitted on all of their
training frames together (not per clip), so that units from any drive (the audio stage, the
phonetic drive, true landmarks) map onto this person's own range of mouth shapes.

Reference bank: three training frames chosen by the inner-lip gap: ``closed`` (among the 10 %
most closed), ``mid`` (between the 50th and 80th percentile, preferring frames whose mouth
interior is bright: teeth), ``open`` (between the 88th and 98th); in each band the frame ranked
best on a typical lip shape for the band (nearest its mean units: no lip bite, no grimace),
frontality, mouth sharpness and (mid, open) teeth.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtdub import media
from rtdub.exceptions import InputError
from rtdub.face import align
from rtdub.face.lipunits import INNER_LIP, LIP_IDX, LipBasis, UnitStats
from rtdub.face.tracker import FaceObservation
from rtdub.render import hires
from rtdub.render.blend import face_mask
from rtdub.render.reference import NOSE_TIP, NOSE_TIP_X

from .data import Clip, load_clip
from .shards import prepare_clip

logger = logging.getLogger(__name__)

MIN_SECONDS = 10.0  # of usable face: below, enrolment refuses
RECOMMENDED_SECONDS = 60.0  # below, it warns
MIN_FACE_PX = 80.0  # frame pixels the aligned crop must span
COUNT_EVERY = 1.0  # s between face counts
SECOND_FACE = 1 / 3  # a second face counts when at least this share of the largest's height
BANK_NAMES = ("closed", "mid", "open")
MAX_HIRES = 384  # largest stored reference crop (rtdub/render/hires.py's largest render size)


class FootageError(InputError):
    """Too little usable face in the footage (exit code 2)."""


@dataclass(frozen=True)
class Source:
    """One recording: its frames before ``train_until`` (a fraction of its duration) train the
    model, the rest is held back to measure it."""

    path: Path
    train_until: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.train_until <= 1.0:
            raise ValueError(f"train_until must be within [0, 1], got {self.train_until}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FaceCounter:
    """Faces in a frame, by mediapipe's full-range detector (about 10 ms a frame)."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        from rtdub.quiet import native_stderr_silenced

        self._silenced = native_stderr_silenced
        with native_stderr_silenced():
            self._det = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_confidence
            )

    def count(self, image: np.ndarray) -> int:
        with self._silenced():
            res = self._det.process(np.ascontiguousarray(image))
        heights = sorted(
            (float(d.location_data.relative_bounding_box.height) for d in getattr(res, "detections", None) or []),
            reverse=True,
        )
        return 0 if not heights else 1 + sum(h >= SECOND_FACE * heights[0] for h in heights[1:])

    def close(self) -> None:
        with self._silenced():
            self._det.close()


@dataclass(frozen=True)
class Prepared:
    """One recording tracked: its shard and the face counts taken along the way."""

    shard: Path
    count_times: np.ndarray  # (K,) s
    counts: np.ndarray  # (K,) faces found by the detector


def prepare_source(src: Path, shard: Path, size: int = 96, on_frame: Callable[[int], None] | None = None) -> Prepared:
    """Track ``src`` into ``shard`` (training/shards.py) and count its faces about once a
    second; the counts go beside the shard (``<shard>.faces.npz``). A finished shard is reused."""
    counts_path = shard.with_name(shard.name + ".faces.npz")
    if shard.is_file() and counts_path.is_file():
        z = np.load(counts_path)
        return Prepared(shard, z["times"], z["counts"])
    counter = FaceCounter()
    times: list[float] = []
    counts: list[int] = []

    def hook(i: int, fr: media.Frame, obs: FaceObservation | None) -> None:
        if not times or fr.time - times[-1] >= COUNT_EVERY:
            times.append(fr.time)
            counts.append(counter.count(fr.image))
        if on_frame is not None:
            on_frame(i)

    try:
        prepare_clip(src, shard, size, hook)
    finally:
        counter.close()
    tmp = counts_path.with_name(counts_path.name + ".part.npz")
    np.savez(tmp, times=np.asarray(times, np.float64), counts=np.asarray(counts, np.int64))
    tmp.replace(counts_path)
    return Prepared(shard, np.asarray(times), np.asarray(counts))


@dataclass(frozen=True)
class FootageReport:
    """Seconds of one recording by what was found."""

    name: str
    duration: float
    frames: int
    usable: float
    no_face: float
    several_faces: float
    too_small: float
    face_px_median: float  # frame pixels spanned by the aligned crop, median over face frames

    def to_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class PersonClip:
    """A tracked recording with its per-frame flags (training.data.Clip plus what enrolment adds)."""

    source: Source
    clip: Clip
    matrix: np.ndarray  # (N, 2, 3) frame -> S px crop
    face_px: np.ndarray  # (N,) frame pixels the crop spans, 0 without a face
    usable: np.ndarray  # (N,) bool
    train: np.ndarray  # (N,) bool: usable and before the split
    test: np.ndarray  # (N,) bool: usable and after the split
    report: FootageReport


def load_person_clip(source: Source, prepared: Prepared, min_face_px: float = MIN_FACE_PX) -> PersonClip:
    clip = load_clip(prepared.shard)
    z = np.load(prepared.shard)
    if "matrix" not in z:
        raise ValueError(f"{prepared.shard}: a shard without alignment matrices (made before training/shards.py)")
    matrix = z["matrix"].astype(np.float64)
    n = len(clip.times)
    size = clip.crops.shape[1]
    scale = np.sqrt(np.abs(np.linalg.det(matrix[:, :, :2])))
    face_px = np.where(clip.valid & (scale > 0), size / np.maximum(scale, 1e-9), 0.0)
    several = np.zeros(n, bool)
    if len(prepared.counts):  # each count holds until the next one
        at = np.clip(np.searchsorted(prepared.count_times, clip.times, side="right") - 1, 0, None)
        several = prepared.counts[at] >= 2
    big = face_px >= min_face_px
    usable = clip.valid & big & ~several
    dt = 1.0 / max(clip.fps, 1e-6)
    duration = float(n * dt)
    cut = source.train_until * duration
    train = usable & (clip.times < cut)
    test = usable & (clip.times >= cut)
    report = FootageReport(
        name=source.path.name,
        duration=duration,
        frames=n,
        usable=float(usable.sum() * dt),
        no_face=float((~clip.valid).sum() * dt),
        several_faces=float((clip.valid & several).sum() * dt),
        too_small=float((clip.valid & ~several & ~big).sum() * dt),
        face_px_median=float(np.median(face_px[clip.valid])) if clip.valid.any() else 0.0,
    )
    return PersonClip(source, clip, matrix, face_px, usable, train, test, report)


def check_footage(
    clips: Sequence[PersonClip],
    min_seconds: float = MIN_SECONDS,
    recommended: float = RECOMMENDED_SECONDS,
    min_face_px: float = MIN_FACE_PX,
) -> list[str]:
    """Refuse (FootageError) footage with less than ``min_seconds`` of usable training face;
    return the warnings (one line each) for the rest."""
    usable = sum(float(c.train.sum()) / c.clip.fps for c in clips)
    total = sum(c.report.duration for c in clips)
    no_face = sum(c.report.no_face for c in clips)
    several = sum(c.report.several_faces for c in clips)
    small = sum(c.report.too_small for c in clips)
    why = (
        f"no face in {no_face:.1f} s, several faces in {several:.1f} s, "
        f"face smaller than {min_face_px:.0f} px in {small:.1f} s"
    )
    names = ", ".join(c.source.path.name for c in clips)
    if usable < min_seconds:
        raise FootageError(
            names,
            f"only {usable:.1f} s of usable face for training in {total:.1f} s of video "
            f"(at least {min_seconds:.0f} s needed, {recommended:.0f} s recommended; {why})",
        )
    warnings = []
    if usable < recommended:
        warnings.append(
            f"{usable:.1f} s of usable face for training: {recommended:.0f} s or more is recommended "
            f"for a good model ({why})"
        )
    elif several > 0 or small > 0.2 * total:
        warnings.append(f"{usable:.1f} s of usable face for training; left out: {why}")
    return warnings


@dataclass(frozen=True)
class PersonUnits:
    """The person's unit statistics (z-scoring) and closed-mouth units."""

    stats: UnitStats
    closed: np.ndarray  # (U,) z units: the mean of their 10 % most closed training frames

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "mean": [float(x) for x in self.stats.mean],
            "std": [float(x) for x in self.stats.std],
            "closed": [float(x) for x in self.closed],
        }


def attach_person_units(clips: Sequence[PersonClip], basis: LipBasis) -> PersonUnits:
    """Raw and z units on every clip (``Clip.raw_units``, ``Clip.units``), z-scored with the
    statistics of all training frames together; frames without a face get zeros."""
    for pc in clips:
        c = pc.clip
        raw = np.zeros((len(c.lips), basis.n_units), np.float32)
        if c.valid.any():
            raw[c.valid] = basis.raw_units(c.lips[c.valid])
        c.raw_units = raw
    train_raw = np.concatenate([pc.clip.raw_units[pc.train] for pc in clips if pc.clip.raw_units is not None])
    stats = UnitStats.fit(train_raw)
    for pc in clips:
        c = pc.clip
        assert c.raw_units is not None
        c.units = stats.normalize(c.raw_units)
        c.units[~c.valid] = 0
        c.stats = stats
    z = stats.normalize(train_raw)
    closed = z[z[:, -1] <= np.quantile(z[:, -1], 0.1)].mean(0).astype(np.float32)
    return PersonUnits(stats, closed)


@dataclass(frozen=True)
class BankPick:
    """One chosen reference: where it is and what it shows."""

    name: str
    clip: int  # index into the clips
    frame: int
    time: float
    gap: float  # z units
    gap_raw: float  # canonical units
    yaw: float
    units: tuple[float, ...]  # the frame's z units
    face_px: float


def _crop_points(clip: Clip, i: int, canon: np.ndarray, size: int) -> np.ndarray:
    return align.apply(align.canonical_to_crop(size), canon[i])


def _interior_brightness(crop: np.ndarray, inner: np.ndarray) -> float:
    """p90 of the lightness inside the inner lips (teeth are the brightest thing there)."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 1)
    if mask.sum() < 4:
        return 0.0
    lum = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)[:, :, 0]
    return float(np.percentile(lum[mask > 0], 90))


def _mouth_sharpness(crop: np.ndarray, size: int) -> float:
    x0, y0, x1, y1 = face_mask(size).bbox
    g = cv2.cvtColor(crop[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def _rank(x: np.ndarray) -> np.ndarray:
    """0 for the smallest value, 1 for the largest."""
    r = np.argsort(np.argsort(x)).astype(np.float64)
    return r / max(len(x) - 1, 1)


def _units(c: Clip) -> np.ndarray:
    assert c.units is not None, "units not attached (attach_person_units)"
    return c.units


def choose_bank(clips: Sequence[PersonClip], canon: Sequence[np.ndarray]) -> list[BankPick]:
    """The closed, mid-open and open references among the training frames (module docstring).
    ``canon`` are the clips' canonical landmarks (N, 468, 2)."""
    rows = [(k, i) for k, pc in enumerate(clips) for i in np.nonzero(pc.train)[0]]
    if not rows:
        raise ValueError("no training frames to choose references from")
    gap = np.array([_units(clips[k].clip)[i, -1] for k, i in rows])
    yaw = np.array([abs(float(canon[k][i, NOSE_TIP, 0]) - NOSE_TIP_X) for k, i in rows])
    size = clips[0].clip.crops.shape[1]
    inner_pos = [int(np.nonzero(LIP_IDX == j)[0][0]) for j in INNER_LIP]
    bands = {"closed": (0.0, 0.10), "mid": (0.50, 0.80), "open": (0.88, 0.98)}
    picks = []
    for name in BANK_NAMES:
        lo, hi = np.quantile(gap, bands[name])
        cand = np.nonzero((gap >= lo) & (gap <= hi))[0]
        if cand.size == 0:
            cand = np.array([int(np.argmin(np.abs(gap - (lo + hi) / 2)))])
        if cand.size > 400:  # enough to choose from; evenly spread over the footage
            cand = cand[np.linspace(0, cand.size - 1, 400).round().astype(int)]
        sharp = np.array([_mouth_sharpness(clips[rows[j][0]].clip.crops[rows[j][1]], size) for j in cand])
        # typical of the band: the lip shape (z units) nearest the band's mean, not a lip bite or a grimace
        shape = np.stack([_units(clips[rows[j][0]].clip)[rows[j][1]] for j in cand])
        odd = np.linalg.norm(shape - shape.mean(0), axis=1)
        score = _rank(yaw[cand]) + _rank(-sharp) + 2.0 * _rank(odd)
        if name != "closed":
            teeth = []
            for j in cand:
                k, i = rows[j]
                pts = _crop_points(clips[k].clip, i, canon[k], size)[LIP_IDX][inner_pos]
                teeth.append(_interior_brightness(clips[k].clip.crops[i], pts))
            score = score + (2.0 if name == "mid" else 1.0) * _rank(-np.array(teeth))
        j = int(cand[int(np.argmin(score))])
        k, i = rows[j]
        c = clips[k].clip
        assert c.units is not None and c.raw_units is not None
        picks.append(
            BankPick(
                name=name,
                clip=k,
                frame=int(i),
                time=float(c.times[i]),
                gap=float(c.units[i, -1]),
                gap_raw=float(c.raw_units[i, -1]),
                yaw=float(yaw[j]),
                units=tuple(float(x) for x in c.units[i]),
                face_px=float(clips[k].face_px[i]),
            )
        )
        logger.info(
            "reference %s: %s frame %d (%.2f s), gap %.2f z, yaw %.3f",
            name,
            c.name,
            i,
            c.times[i],
            picks[-1].gap,
            yaw[j],
        )
    return picks


def hires_size(face_px: float, crop_size: int) -> int:
    """The stored size of a reference's large crop: the frame's own resolution (multiple of 32)."""
    return int(min(MAX_HIRES, max(crop_size, round(face_px / 32) * 32)))


def hires_crops(clips: Sequence[PersonClip], picks: Sequence[BankPick]) -> dict[str, np.ndarray]:
    """Each pick's crop at :func:`hires_size`, cut from the decoded frame (Lanczos), by name."""
    out: dict[str, np.ndarray] = {}
    for k in sorted({p.clip for p in picks}):
        want = {p.frame: p for p in picks if p.clip == k}
        pc = clips[k]
        size = pc.clip.crops.shape[1]
        for i, fr in enumerate(media.iter_frames(pc.source.path)):
            if i in want:
                p = want[i]
                r = hires_size(p.face_px, size)
                al = hires.scaled(align.Alignment(pc.matrix[i], size), r)
                out[p.name] = hires.crop(fr.image, al, hires.KERNELS["lanczos"])
            if i >= max(want):
                break
    missing = [p.name for p in picks if p.name not in out]
    if missing:
        raise ValueError(f"reference frames {missing} not found on decoding again")
    return out


def seconds_text(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s" if seconds >= 60 else f"{seconds:.1f} s"


def usable_minutes(clips: Sequence[PersonClip]) -> float:
    return sum(float(c.train.sum()) / c.clip.fps for c in clips) / 60.0


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
