"""The evaluation protocols of docs/design.md §5 in the runtime (torch-free), for ``rtdub bench``.

Reconstruction: a clip is dubbed with its own audio and compared with itself on LMD,
mouth-opening correlation (MOC), PSNR/SSIM of the lower face and mouth sharpness
and, on the open half of the frames, the mouth-interior contrast (a teeth proxy), for

    model        the bundle, driven by the audio (what users get)
    true-units   the bundle's generator fed the clip's own lip units (the audio stage's ceiling)
    frozen       the identity reference pasted back with no motion (the baseline to beat)

The model never sees the ground-truth mouth: the pose input hides the lower face and the
identity reference is chosen causally, at least 1 s in the past (except during the first
second, where the first frame has to serve).

Lip closure: a face is dubbed with TTS speech whose phoneme times are known; the AUC of the
inner-lip gap between open-vowel frames and /p b m/ frames measures whether the lips open
and close with the speech (0.5: no signal).

The logic and the figures are those of ``training/evaluate.py`` (same tracker, same metrics,
same masks); here every output frame is scored as soon as it is rendered, so a clip's output
is never held in memory, and the per-frame compute of the pipeline is returned with it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .. import audio, media, tts
from ..backends.base import Backend
from ..drive.choice import DriveSpec, make_drive
from ..drive.events import from_speech
from ..drive.phonetic import bundle_drive
from ..engine import EngineConfig, build_pipeline
from ..face import align
from ..face.lipunits import INNER_LIP, LIP_IDX, UnitStats, inner_gap, lip_points, to_canonical
from ..face.tracker import FaceTracker
from ..model import FieldLayout, ModelBundle
from ..render.blend import face_mask
from ..render.hires import RenderSizeConfig
from ..render.pipeline import STAGES, PipelineConfig
from ..render.reference import ReferenceConfig
from . import metrics
from .scoring import expert_crop

logger = logging.getLogger(__name__)

MODES = ("model", "true-units", "frozen")
SCORES = ("LMD", "MOC", "PSNR", "SSIM", "sharpness", "interior")

TTS_TEXT = (
    "Bob may buy a big map. Papa and mama baked apple pie. My father parked the car by the park. Maybe Bob is happy."
)


class FrozenBackend(Backend):
    """Baseline renderer: returns the identity reference unchanged (a frozen mouth)."""

    name = "frozen"

    def __init__(self, inner: Backend, layout: FieldLayout | None = None) -> None:
        self.inner = inner
        self.layout = layout or FieldLayout()  # the bundle's field channels

    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        return self.inner.audio_to_lip(mel, lookahead)

    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        return reference.copy()

    @property
    def has_fields(self) -> bool:
        return True

    def generate_fields(
        self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The reference, and fields that say so (no flow, alpha 1): at a render size above
        the crop size the frozen baseline pastes the hi-res reference, like the model."""
        fields = np.zeros((reference.shape[0], self.layout.count, *reference.shape[2:]), np.float32)
        fields[:, self.layout.alpha] = 1.0
        return reference.copy(), fields


@dataclass(frozen=True)
class LipTrack:
    lips: np.ndarray  # (N, 40, 2) canonical lip points, NaN where the face was lost
    gap: np.ndarray  # (N,) inner-lip gap, NaN where lost
    landmarks: tuple[np.ndarray | None, ...]  # (468, 2) frame pixels per frame


def track_frames(frames: Sequence[np.ndarray], times: np.ndarray) -> LipTrack:
    lips = np.full((len(frames), 40, 2), np.nan)
    gap = np.full(len(frames), np.nan)
    lms: list[np.ndarray | None] = []
    with FaceTracker() as tr:
        for i, (f, t) in enumerate(zip(frames, times, strict=True)):
            o = tr.track(f, float(t))
            lms.append(None if o is None else o.landmarks)
            if o is not None:
                c = to_canonical(o.landmarks)
                lips[i] = lip_points(c)
                gap[i] = inner_gap(c)
    return LipTrack(lips, gap, tuple(lms))


@dataclass(frozen=True)
class ClipData:
    """A clip decoded once, with its ground-truth lip track and true units."""

    name: str
    frames: tuple[np.ndarray, ...]
    times: np.ndarray
    fps: float
    mel: audio.StaticMel
    truth: LipTrack
    true_units: np.ndarray  # (N, U) z-scored per clip; closed units where the face was lost

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


def load_clip(path: Path, bundle: ModelBundle, max_frames: int | None = None, height: int | None = None) -> ClipData:
    """Decode ``path`` (its first ``max_frames`` frames), its audio, and track the truth.
    ``height`` resizes the frames to that height first (area filter, aspect kept), e.g. to
    score a model at a webcam's resolution."""
    frames: list[np.ndarray] = []
    ts: list[float] = []
    for fr in media.iter_frames(path):
        if max_frames is not None and len(frames) >= max_frames:
            break
        image = fr.image
        if height is not None and height != image.shape[0]:
            width = max(2, round(image.shape[1] * height / image.shape[0] / 2) * 2)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        frames.append(image)
        ts.append(fr.time)
    times = np.asarray(ts)
    wav = media.load_audio(path)
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(wav)))
    gt = track_frames(frames, times)
    ok = np.isfinite(gt.gap)
    raw = np.zeros((len(frames), bundle.n_units), np.float32)
    if ok.any():
        raw[ok] = bundle.basis.raw_units(gt.lips[ok])
        true_units = UnitStats.fit(raw[ok]).normalize(raw)
    else:
        true_units = raw
    true_units[~ok] = bundle.closed_units
    fps = float(media.probe_video(path).fps)
    return ClipData(path.stem, tuple(frames), times, fps, mel, gt, true_units)


@dataclass(frozen=True)
class Rendered:
    """Scores of one rendering of a clip and the pipeline compute per frame."""

    scores: dict[str, float]
    frame_ms: np.ndarray  # (N,) sum of the pipeline stages per frame
    stage_ms: dict[str, np.ndarray]  # per stage, over the frames that ran it
    composite_ms: np.ndarray | None = None  # (N,) hi-res compositing and paste, part of "blend"
    render_size: np.ndarray | None = None  # (N,) side of the pasted crop, 0 without a face
    # the output frames as the lip-sync expert sees them (rtdub.measure.scoring.expert_crop, aligned
    # with the output's own landmarks, None where no face was found); empty unless asked for
    expert_crops: tuple[np.ndarray | None, ...] = ()


def _pipeline_ms(times: dict[str, float], acc: dict[str, list[float]]) -> float:
    for k, v in times.items():
        acc.setdefault(k, []).append(v)
    return float(sum(times.values()))


def reconstruct(
    clip: ClipData,
    mode: str,
    bundle: ModelBundle,
    backend: Backend,
    lookahead_ms: float,
    expert_crop_size: int | None = None,
    render: RenderSizeConfig | None = None,
    reference: ReferenceConfig | None = None,
) -> Rendered:
    """Dub ``clip`` with its own audio in ``mode`` (one of :data:`MODES`) and score it.
    ``render`` sets the render size (rtdub/render/hires.py) and ``reference`` the choice of identity
    reference (rtdub/render/reference.py); the pipeline's defaults when None.
    With ``expert_crop_size``, also keep the output's crops for a lip-sync expert (the crops
    ``rtdub eval`` takes of a video), to be scored with :func:`rtdub.measure.scoring.sync_scores`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    be: Backend = FrozenBackend(backend, bundle.fields) if mode == "frozen" else backend
    size = bundle.crop_size
    lower = face_mask(size).soft > 0.5
    n = len(clip.frames)
    out_lips = np.full((n, 40, 2), np.nan)
    out_gap = np.full(n, np.nan)
    ps: list[float] = []
    ss: list[float] = []
    sh: list[float] = []
    inner: list[float] = []
    # the open half of the clip (inner gap above its median): where teeth can show
    opened = np.nan_to_num(clip.truth.gap, nan=-np.inf) > np.nanmedian(clip.truth.gap)
    frame_ms = np.zeros(n)
    comp_ms = np.zeros(n)
    sizes = np.zeros(n, np.int64)
    acc: dict[str, list[float]] = {}
    crops: list[np.ndarray | None] = []
    nan = float("nan")
    with FaceTracker() as render_tracker, FaceTracker() as score_tracker:
        engine = EngineConfig(pipeline=_config(lookahead_ms, render, reference))
        pipe = build_pipeline(engine, render_tracker, bundle, be)
        for i, (f, t) in enumerate(zip(clip.frames, clip.times, strict=True)):
            img = f.copy()
            u = clip.true_units[i] if mode == "true-units" else None
            res = pipe.process(img, float(t), clip.mel, units=u)
            frame_ms[i] = _pipeline_ms(res.times, acc)
            comp_ms[i], sizes[i] = res.composite_ms, res.render_size
            o = score_tracker.track(img, float(t))
            if expert_crop_size is not None:
                crops.append(None if o is None else expert_crop(img, o.landmarks, expert_crop_size))
            lm = clip.truth.landmarks[i]
            if o is None or lm is None:
                continue
            c = to_canonical(o.landmarks)
            out_lips[i], out_gap[i] = lip_points(c), inner_gap(c)
            al = align.estimate(lm, size)
            a, b = align.warp_to_crop(img, al), align.warp_to_crop(f, al)
            ps.append(metrics.psnr(a, b, lower))
            ss.append(metrics.ssim(a, b, lower))
            sh.append(metrics.sharpness_ratio(img, f, metrics.mouth_box(lm, LIP_IDX)))
            if opened[i]:
                a_in = metrics.interior_contrast(img, o.landmarks, INNER_LIP)
                b_in = metrics.interior_contrast(f, lm, INNER_LIP)
                inner.append(a_in / b_in if b_in > 0 else nan)
    ok = np.isfinite(clip.truth.gap) & np.isfinite(out_gap)
    scores = {
        "LMD": metrics.lmd(out_lips[ok], clip.truth.lips[ok]) if ok.any() else nan,
        "MOC": metrics.pearson(out_gap[ok], clip.truth.gap[ok]) if ok.sum() > 1 else nan,
        "PSNR": float(np.mean(ps)) if ps else nan,
        "SSIM": float(np.mean(ss)) if ss else nan,
        "sharpness": float(np.nanmedian(sh)) if sh and np.isfinite(sh).any() else nan,
        "interior": float(np.nanmedian(inner)) if inner and np.isfinite(inner).any() else nan,
        "frames": int(ok.sum()),
        "tracked_out_of": n,
    }
    stage_ms = {k: np.asarray(v) for k, v in acc.items() if k in STAGES}
    return Rendered(scores, frame_ms, stage_ms, expert_crops=tuple(crops), composite_ms=comp_ms, render_size=sizes)


def _config(
    lookahead_ms: float, render: RenderSizeConfig | None, reference: ReferenceConfig | None = None
) -> PipelineConfig:
    cfg = PipelineConfig(lookahead_ms=lookahead_ms)
    if render is not None:
        cfg = replace(cfg, render=render)
    if reference is not None:
        cfg = replace(cfg, reference=reference)
    return cfg


def truth_expert_crops(clip: ClipData, size: int) -> tuple[np.ndarray | None, ...]:
    """The clip's own frames as the lip-sync expert sees them (the ground-truth reference)."""
    return tuple(
        None if lm is None else expert_crop(f, lm, size)
        for f, lm in zip(clip.frames, clip.truth.landmarks, strict=True)
    )


@dataclass(frozen=True)
class LipClosure:
    auc: float  # inner gap on open vowels vs on /p b m/; 0.5 = no signal
    frames_open: int
    frames_bilabial: int
    frames: int
    frame_ms: np.ndarray


def tts_speech(text: str = TTS_TEXT, voice: str = "en-us", rate: int = 140) -> tts.Speech:
    """The protocol's TTS sentence at 16 kHz, with its phoneme times."""
    return tts.synthesize(text, voice=voice, rate=rate).resampled(audio.SAMPLE_RATE)


DRIVES = ("audio", "events", "text")


def lip_closure(
    frames: Iterable[np.ndarray],
    speech: tts.Speech,
    fps: float,
    bundle: ModelBundle,
    backend: Backend,
    lookahead_ms: float,
    frozen: bool = False,
    render: RenderSizeConfig | None = None,
    reference: ReferenceConfig | None = None,
    drive: str = "audio",
    text: tuple[str, str] | None = None,
) -> LipClosure:
    """Dub ``frames`` (one per ``1/fps``, at least as long as the speech) with ``speech`` and
    return the AUC of the inner-lip gap on open-vowel frames against frames where the lips
    close for /p b m/ (:func:`rtdub.tts.lip_closures`: a stop's silent closure before its
    release, which espeak-ng's phoneme event marks, not the release itself).

    ``drive`` "audio" moves the lips from the audio alone; "events" from espeak's own phoneme
    events through the bundle's phonetic model (rtdub/drive/phonetic.py), as the ``tts`` dub
    source and ``rtdub dub --phonemes`` do; "text" from ``text`` = (the words, their language)
    aligned to the speech (rtdub/drive/textalign.py), as ``rtdub dub --text`` does (the
    speech's own events are then only the ground truth)."""
    if drive not in DRIVES:
        raise ValueError(f"drive must be one of {DRIVES}, got {drive!r}")
    n = math.ceil(speech.duration * fps - 1e-9)
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(speech.samples)))
    bil = tts.closure_frames(speech, fps)[:n]
    opn = tts.frames_with(speech, tts.OPEN_VOWELS, fps)[:n]
    gap = np.full(n, np.nan)
    frame_ms = np.zeros(n)
    acc: dict[str, list[float]] = {}
    be: Backend = FrozenBackend(backend, bundle.fields) if frozen else backend
    it = iter(frames)
    with FaceTracker() as render_tracker, FaceTracker() as score_tracker:
        engine = EngineConfig(pipeline=_config(lookahead_ms, render, reference))
        pipe = build_pipeline(engine, render_tracker, bundle, be)
        if drive == "events":
            pipe.set_drive(bundle_drive(bundle, from_speech(speech), pipe.audio, speech.samples, speech.sample_rate))
        elif drive == "text":
            if text is None:
                raise ValueError("drive 'text' needs the text and its language")
            spec = DriveSpec(text=text[0], language=text[1])
            pipe.set_drive(make_drive(spec, bundle, pipe.audio, speech.samples, speech.sample_rate))
        for i in range(n):
            t = i / fps
            try:
                img = np.array(next(it), copy=True)
            except StopIteration:
                raise ValueError(f"lip_closure needs {n} frames, got {i}") from None
            res = pipe.process(img, t, mel)
            frame_ms[i] = _pipeline_ms(res.times, acc)
            o = score_tracker.track(img, t)
            if o is not None:
                gap[i] = inner_gap(to_canonical(o.landmarks))
    ok = np.isfinite(gap)
    return LipClosure(metrics.auc(gap[ok & opn], gap[ok & bil]), int(opn.sum()), int(bil.sum()), n, frame_ms)
