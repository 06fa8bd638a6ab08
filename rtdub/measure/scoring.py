"""``rtdub eval``: score a dubbed video against its audio (and optionally a reference).

    rtdub eval --video OUT.mp4 --audio A.wav [--reference GT.mp4] [--expert DIR] [--json]

Always: LSE-D, LSE-C and the AV offset (rtdub/measure/avsync.py, syncnet_python's formulas over ±15
frames, with the project's lip-sync expert) and AVSu. With a reference: PSNR and SSIM of
the lower face, LMD and the mouth-opening correlation (MOC) as rtdub/measure/metrics.py defines
them, with both videos cropped with the reference's landmarks, plus AVSv and AVSm.

Frames are paired by presentation time, not by index, so variable-frame-rate videos and
videos at different rates compare the right frames: each output frame is paired with the
reference frame nearest in time if it is at most half a reference frame period away (half
the median interval between the reference's timestamps). Frames without a partner are
counted in the report (``unpaired_video_frames``, ``unpaired_reference_frames``), and every
expert window takes its audio at its own frame's timestamp. The two videos are decoded once,
side by side; only the 96 px crops (and the few reference frames that an output frame may
still pair with) are kept in memory.

The AV offset (``av_offset``) combines the expert's distances over the ±15 offsets with a
second, pixel-free opinion (rtdub/measure/phonesync.py): the inner-lip gap the default
bundle's audio-to-lip model hears in the audio, correlated with the tracked gap at each
offset. The expert's own offset (``av_offset_expert``, syncnet_python's), the evidence's
(``av_offset_evidence``) and which one ``av_offset`` is (``av_offset_from``) are reported
beside it; ``--no-evidence`` keeps the expert's alone.

The audio and the video should last as long as each other (``rtdub dub`` writes them so):
when they differ by more than :data:`LENGTH_TOLERANCE_S` a warning says so, since the scores
then cover only where both exist (the expert hears silence past the audio's end).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from .. import audio, media
from ..exceptions import InputError
from ..face import align
from ..face.lipunits import inner_gap, lip_points, to_canonical
from ..render.blend import face_mask
from . import metrics
from .avsync import AVExpert, SyncNetExpert, avs_m, avs_u, avs_v, lse
from .phonesync import DEFAULT_RULE, CombineRule, GapPredictor, PhoneRecogniser, combine, evidence_curve, phone_gap

logger = logging.getLogger(__name__)

LENGTH_TOLERANCE_S = 1.0  # audio and video lengths further apart than this get a warning


@dataclass(frozen=True)
class EvalReport:
    video: str
    audio: str
    reference: str | None
    frames: int
    faces: int
    fps: float
    lse_d: float
    lse_c: float
    av_offset: int  # the offset used: the combined one, or the expert's without evidence
    avs_u: float
    # the lip-sync expert alone (syncnet_python's argmin), the mouth-opening evidence alone
    # (rtdub/measure/phonesync.py), and which of the combined and the expert's av_offset is
    av_offset_expert: int | None = None
    av_offset_evidence: int | None = None
    av_offset_from: str | None = None  # "combined" or "expert"
    evidence_confidence: float | None = None  # peak − median of the evidence's correlation curve
    av_offset_phones: int | None = None  # the recognised phones alone (None: pocketsphinx not installed)
    psnr: float | None = None
    ssim: float | None = None
    lmd: float | None = None
    moc: float | None = None
    avs_v: float | None = None
    avs_m: float | None = None
    audio_seconds: float | None = None  # how long the scored audio and video last
    video_seconds: float | None = None
    # with a reference: frame pairs by timestamp, and the frames left without a partner
    paired_frames: int | None = None
    unpaired_video_frames: int | None = None
    unpaired_reference_frames: int | None = None

    def to_json(self) -> dict[str, object]:
        def clean(v: object) -> object:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {k: clean(v) for k, v in asdict(self).items()}


class _Track:
    """Per-frame tracking of one video: crops aligned with its own landmarks, lips, gap."""

    def __init__(self, size: int) -> None:
        from ..face.tracker import FaceTracker  # mediapipe: loaded when a command runs, not at import

        self.size = size
        self.tracker = FaceTracker()
        self.crops: list[np.ndarray | None] = []
        self.lips: list[np.ndarray | None] = []
        self.gap: list[float] = []

    def add(self, image: np.ndarray, t: float) -> np.ndarray | None:
        o = self.tracker.track(image, t)
        if o is None:
            self.crops.append(None)
            self.lips.append(None)
            self.gap.append(math.nan)
            return None
        c = to_canonical(o.landmarks)
        self.crops.append(expert_crop(image, o.landmarks, self.size))
        self.lips.append(lip_points(c))
        self.gap.append(inner_gap(c))
        return np.asarray(o.landmarks)

    @property
    def faces(self) -> int:
        return sum(c is not None for c in self.crops)


def expert_crop(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The crop the expert sees of a frame: aligned with the frame's own landmarks."""
    return align.warp_to_crop(image, align.estimate(landmarks, size))


@dataclass(frozen=True)
class SyncResult:
    """The expert's view of one clip: LSE over ±15 offsets and AVSu."""

    lse_d: float
    lse_c: float
    av_offset: int
    avs_u: float
    frames: int
    faces: int
    distances: np.ndarray | None = None  # mean distance per offset k = −15…+15


def sync_scores(expert: AVExpert, crops: Sequence[np.ndarray | None], mel: np.ndarray, times: np.ndarray) -> SyncResult:
    """LSE-D, LSE-C, AV offset and AVSu of per-frame expert crops (None: no face; such
    frames take the nearest earlier crop) against ``mel`` (the whole signal, rtdub.audio
    scale) at the frame ``times``. ValueError without a face or with too few frames."""
    faces = sum(c is not None for c in crops)
    if faces == 0:
        raise ValueError("no face found in any frame")
    if len(crops) < expert.window.frames:
        raise ValueError(f"too short: the expert needs at least {expert.window.frames} frames")
    emb = expert.embed_clip(_fill(crops, expert.window.crop_size), mel, np.asarray(times, np.float64))
    s = lse(emb.video, emb.audio)
    return SyncResult(s.lse_d, s.lse_c, s.offset, avs_u(emb), len(crops), faces, s.distances)


@dataclass(frozen=True)
class EvidenceOffset:
    """The AV offset with the mouth-opening evidence (rtdub/measure/phonesync.py)."""

    offset: int  # the one used
    expert: int
    evidence: int | None
    used: str  # "combined" or "expert"
    confidence: float
    phones: int | None = None


def evidence_offset(
    sync: SyncResult,
    gap: Sequence[float],
    mel: np.ndarray,
    times: np.ndarray,
    predictor: GapPredictor,
    rule: CombineRule = DEFAULT_RULE,
    wav: np.ndarray | None = None,
    recogniser: PhoneRecogniser | None = None,
) -> EvidenceOffset:
    """Combine the expert's distance curve with the correlation between the tracked inner-lip
    ``gap`` per frame (nan: no face) and the gap the audio-to-lip model hears at ``times``, and
    with the gap the recognised phones of ``wav`` (16 kHz) predict when a recogniser is given."""
    assert sync.distances is not None
    t = np.asarray(times, np.float64)
    g = np.asarray(gap, np.float64)
    pred = predictor.predict(mel, t)
    phones = None
    if recogniser is not None and wav is not None and rule.phone_weight > 0:
        try:
            phones = evidence_curve(g, phone_gap(recogniser.spans(wav), t))
        except RuntimeError as exc:  # pocketsphinx gave up on this audio: the other evidence still counts
            logger.warning("no recognised phones for the AV offset: %s", exc)
    c = combine(sync.distances, evidence_curve(g, pred), rule, phones)
    logger.info(
        "AV offset: expert %+d, evidence %s, phones %s, combined %+d (%s; evidence confidence %.3f)",
        c.expert, _signed(c.evidence), _signed(c.phones), c.combined, c.used, c.evidence_confidence,
    )  # fmt: skip
    return EvidenceOffset(c.combined, c.expert, c.evidence, c.used, c.evidence_confidence, c.phones)


def _signed(v: int | None) -> str:
    return "none" if v is None else f"{v:+d}"


def _fill(crops: Sequence[np.ndarray | None], size: int) -> np.ndarray:
    """Frames without a face take the nearest earlier crop (the first found before it)."""
    first = next((c for c in crops if c is not None), None)
    last = first if first is not None else np.zeros((size, size, 3), np.uint8)
    out = []
    for c in crops:
        if c is not None:
            last = c
        out.append(last)
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def _frames(path: Path) -> Iterator[media.Frame]:
    yield from media.iter_frames(path)


def frame_interval(path: Path) -> float | None:
    """Median interval (s) between the presentation times of the first video stream's frames,
    from the demuxed packets (nothing is decoded); None with fewer than two timestamps."""
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            pts = sorted(float(k.pts * k.time_base) for k in c.demux(s) if k.pts is not None and k.time_base)
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(str(path), f"cannot read the video timestamps ({exc})") from exc
    d = np.diff(pts)
    d = d[d > 0]
    return float(np.median(d)) if d.size else None


@dataclass(frozen=True)
class _RefFrame:
    index: int
    time: float
    image: np.ndarray
    landmarks: np.ndarray | None


class _Reference:
    """The reference, decoded alongside the output. Every frame is tracked once, in order;
    a frame is kept only while a later output frame may still pair with it."""

    def __init__(self, frames: Iterator[media.Frame], track: _Track, tolerance: float) -> None:
        self._frames = frames
        self.track = track
        self.tolerance = tolerance
        self.times: list[float] = []
        self.used: set[int] = set()
        self._window: deque[_RefFrame] = deque()
        self._done = False

    def _pull(self) -> None:
        fr = next(self._frames, None)
        if fr is None:
            self._done = True
            return
        lm = self.track.add(fr.image, fr.time)
        self._window.append(_RefFrame(len(self.times), fr.time, fr.image, lm))
        self.times.append(fr.time)

    def partner(self, t: float) -> _RefFrame | None:
        """The reference frame nearest to time ``t`` within the tolerance (the earlier one on
        a tie); output times must be increasing from call to call."""
        while not self._done and (not self._window or self._window[-1].time <= t + self.tolerance):
            self._pull()
        while self._window and self._window[0].time < t - self.tolerance:
            self._window.popleft()
        best = min(self._window, key=lambda f: abs(f.time - t), default=None)
        if best is None or abs(best.time - t) > self.tolerance:
            return None
        self.used.add(best.index)
        return best

    def count_rest(self) -> int:
        """Decode (without tracking) the frames after the last pull; returns the total count."""
        rest = sum(1 for _ in self._frames)
        return len(self.times) + rest


def evaluate_files(
    video: Path,
    audio_path: Path,
    reference: Path | None = None,
    expert: AVExpert | None = None,
    evidence: GapPredictor | None = None,
    use_evidence: bool = True,
    recogniser: PhoneRecogniser | None = None,
) -> EvalReport:
    """Score ``video`` against ``audio_path`` (and ``reference``); InputError on bad input.
    The AV offset combines the expert with the mouth-opening evidence of ``evidence`` (the
    default bundle's audio-to-lip model when None) and of the phones ``recogniser`` finds
    (pocketsphinx, when it is installed) unless ``use_evidence`` is False."""
    wav = media.load_audio(audio_path)
    info = media.probe_video(video)
    if reference is not None:
        media.probe_video(reference)
    ex = expert if expert is not None else SyncNetExpert()
    size = ex.window.crop_size
    lower = face_mask(size).soft > 0.5
    mel = audio.melspectrogram(audio.normalize_loudness(wav))

    out_tr = _Track(size)
    ref_tr = _Track(size) if reference is not None else None
    times: list[float] = []
    psnr: list[float] = []
    ssim: list[float] = []
    pairs: list[tuple[int, int]] = []  # (output frame, reference frame), by timestamp
    gen_on_ref: list[np.ndarray | None] = []  # per pair: the output cropped with the reference's landmarks
    ref: _Reference | None = None
    ref_total = 0
    try:
        if reference is not None and ref_tr is not None:
            period = frame_interval(reference) or 1.0 / float(media.probe_video(reference).fps)
            ref = _Reference(_frames(reference), ref_tr, 0.5 * period + 1e-6)
        for i, fr in enumerate(_frames(video)):
            times.append(fr.time)
            out_tr.add(fr.image, fr.time)
            if ref is None:
                continue
            rf = ref.partner(fr.time)
            if rf is None:
                continue
            pairs.append((i, rf.index))
            if rf.landmarks is None or rf.image.shape != fr.image.shape:
                gen_on_ref.append(None)
                continue
            al = align.estimate(rf.landmarks, size)
            a, b = align.warp_to_crop(fr.image, al), align.warp_to_crop(rf.image, al)
            gen_on_ref.append(a)
            psnr.append(metrics.psnr(a, b, lower))
            ssim.append(metrics.ssim(a, b, lower))
        if ref is not None:
            ref_total = ref.count_rest()
    finally:
        out_tr.tracker.close()
        if ref_tr is not None:
            ref_tr.tracker.close()
    n = len(times)
    if n == 0:
        raise InputError(str(video), "video stream holds no frames")
    t = np.asarray(times)
    audio_s = wav.size / audio.SAMPLE_RATE
    video_s = float(t[-1]) + (float(np.median(np.diff(t))) if n > 1 else 1.0 / float(info.fps or 25))
    if abs(audio_s - video_s) > LENGTH_TOLERANCE_S:
        logger.warning(
            "%s lasts %.2f s but %s lasts %.2f s (%.2f s apart): the scores mean something only over the "
            "first %.2f s",
            audio_path, audio_s, video, video_s, abs(audio_s - video_s), min(audio_s, video_s),
        )  # fmt: skip
    try:
        s = sync_scores(ex, out_tr.crops, mel, t)
    except ValueError as exc:
        raise InputError(str(video), str(exc)) from None
    ev: EvidenceOffset | None = None
    if use_evidence:
        predictor = evidence if evidence is not None else _default_predictor()
        if predictor is not None:
            rec = recogniser if recogniser is not None else _default_recogniser()
            ev = evidence_offset(s, out_tr.gap, mel, t, predictor, DEFAULT_RULE, wav, rec)
    report: dict[str, object] = {
        "video": str(video),
        "audio": str(audio_path),
        "reference": str(reference) if reference is not None else None,
        "frames": n,
        "faces": s.faces,
        "fps": float(info.fps),
        "audio_seconds": round(audio_s, 3),
        "video_seconds": round(video_s, 3),
        "lse_d": s.lse_d,
        "lse_c": s.lse_c,
        "av_offset": ev.offset if ev is not None else s.av_offset,
        "av_offset_expert": s.av_offset,
        "av_offset_evidence": ev.evidence if ev is not None else None,
        "av_offset_from": ev.used if ev is not None else "expert",
        "evidence_confidence": ev.confidence if ev is not None else None,
        "av_offset_phones": ev.phones if ev is not None else None,
        "avs_u": s.avs_u,
    }
    if ref is not None and ref_tr is not None and ref_tr.faces > 0:
        report["paired_frames"] = len(pairs)
        report["unpaired_video_frames"] = n - len(pairs)
        report["unpaired_reference_frames"] = ref_total - len(ref.used)
        if len(pairs) < n or len(ref.used) < ref_total:
            logger.warning(
                "frames without a partner",
                extra={"video": n - len(pairs), "reference": ref_total - len(ref.used), "pairs": len(pairs)},
            )
        ok = [(i, j) for i, j in pairs if out_tr.lips[i] is not None and ref_tr.lips[j] is not None]
        nan = math.nan
        if ok:
            lo = np.stack([out_tr.lips[i] for i, _ in ok])  # type: ignore[misc]
            lr = np.stack([ref_tr.lips[j] for _, j in ok])  # type: ignore[misc]
            report["lmd"] = metrics.lmd(lo, lr)
            go = np.asarray([out_tr.gap[i] for i, _ in ok])
            gr = np.asarray([ref_tr.gap[j] for _, j in ok])
            report["moc"] = metrics.pearson(go, gr) if len(ok) > 1 else nan
        report["psnr"] = float(np.mean(psnr)) if psnr else nan
        report["ssim"] = float(np.mean(ssim)) if ssim else nan
        if len(pairs) >= ex.window.frames:
            # one sequence per side over the pairs; each window's audio at its own frame's time
            ref_crops = _fill([ref_tr.crops[j] for _, j in pairs], size)
            gen_crops = _fill(gen_on_ref, size)
            t_gen = np.asarray([times[i] for i, _ in pairs])
            t_ref = np.asarray([ref.times[j] for _, j in pairs])
            e_gen = ex.embed_clip(gen_crops, mel, t_gen)
            e_ref = ex.embed_clip(ref_crops, mel, t_ref)
            report["avs_v"] = avs_v(e_gen, e_ref)
            w = len(pairs) - ex.window.frames + 1
            report["avs_m"] = avs_m(
                ex.embed_multimodal(ex.video_windows(gen_crops), ex.audio_windows(mel, t_gen[:w])),
                ex.embed_multimodal(ex.video_windows(ref_crops), ex.audio_windows(mel, t_ref[:w])),
            )
    elif ref_tr is not None:
        raise InputError(str(reference), "no face found in any frame")
    logger.info("eval done", extra={"frames": n, "faces": out_tr.faces})
    return EvalReport(**report)  # type: ignore[arg-type]


def _default_predictor() -> GapPredictor | None:
    """The default bundle's audio-to-lip model, or None (with a warning) when it cannot load."""
    from ..exceptions import ModelError

    try:
        return GapPredictor()
    except (ModelError, OSError) as exc:
        logger.warning("no mouth-opening evidence for the AV offset (expert only): %s", exc)
        return None


def _default_recogniser() -> PhoneRecogniser | None:
    """pocketsphinx's phones when the rule uses them and it is installed, else None."""
    from ..exceptions import ModelError

    if DEFAULT_RULE.phone_weight <= 0:
        return None
    try:
        return PhoneRecogniser()
    except ModelError as exc:
        logger.info("AV offset without recognised phones: %s", exc)
        return None


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _offset_source(r: EvalReport) -> str:
    exp = "n/a" if r.av_offset_expert is None else f"{r.av_offset_expert:+d}"
    if r.av_offset_from != "combined":
        return f"the lip-sync expert alone: {exp}"
    evd = "n/a" if r.av_offset_evidence is None else f"{r.av_offset_evidence:+d}"
    conf = _fmt(r.evidence_confidence, ".2f")
    phones = "" if r.av_offset_phones is None else f", recognised phones {r.av_offset_phones:+d}"
    return f"combined: lip-sync expert {exp}, mouth-opening evidence {evd} (confidence {conf}){phones}"


def format_report(r: EvalReport) -> list[str]:
    lines = [
        f"{r.video}: {r.frames} frames at {r.fps:.2f} fps, face in {r.faces}",
        f"LSE-C {_fmt(r.lse_c, '.3f')}  LSE-D {_fmt(r.lse_d, '.3f')}"
        "  (expert embeddings are unit vectors: not on the published LSE scale)",
        f"AV offset {r.av_offset:+d} frames ({_offset_source(r)}; positive: the audio leads)",
        f"AVSu {_fmt(r.avs_u, '.3f')}",
    ]
    if r.reference is not None:
        lines.append(
            f"vs {r.reference}: PSNR {_fmt(r.psnr, '.2f')} dB  SSIM {_fmt(r.ssim, '.4f')}  "
            f"LMD {_fmt(r.lmd, '.3f')}  MOC {_fmt(r.moc, '.3f')}  AVSv {_fmt(r.avs_v, '.3f')}  "
            f"AVSm {_fmt(r.avs_m, '.3f')}"
        )
        lines.append(
            f"frames paired by timestamp: {r.paired_frames}; without a partner: "
            f"{r.unpaired_video_frames} of the video, {r.unpaired_reference_frames} of the reference"
        )
    return lines
