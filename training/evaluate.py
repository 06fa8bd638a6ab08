"""Evaluation protocol of DESIGN §5 on a folder of talking-head clips (``make eval``).

    python -m training.evaluate --clips ../shared/media/clips --model engines/default --out runs/eval

Reconstruction: every clip is dubbed with its own audio, and compared with the input on
LMD, mouth-opening correlation (MOC), PSNR/SSIM of the lower face and mouth sharpness, for
    model        the bundle, driven by the audio (what users get)
    true-units   the bundle's generator fed the clip's own lip units (the audio stage's ceiling)
    frozen       the identity reference pasted back with no motion (the baseline to beat)
The model never sees the ground-truth mouth: the pose input hides the lower face and the
identity reference is chosen causally, at least 1 s in the past (except during the first
second, where the first frame has to serve).

Dubbing: a TTS sentence with known phoneme timings is dubbed onto the first clip; the AUC
of the inner-lip gap between open-vowel frames and /p b m/ frames measures lip closure.
Speed: the first clip dubbed with a foreign-language file through the CLI path.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdub import align, audio, media, metrics, samples, tts
from rtdub.backends import BackendConfig, get_backend
from rtdub.backends.base import Backend
from rtdub.blend import face_mask
from rtdub.dub import DubOptions, LoopedFrames, dub_file
from rtdub.lipunits import LIP_IDX, UnitStats, inner_gap, lip_points, to_canonical
from rtdub.model import ModelBundle, load_bundle
from rtdub.pipeline import DubPipeline, PipelineConfig
from rtdub.tracker import FaceTracker

logger = logging.getLogger("training.evaluate")
MODES = ("model", "true-units", "frozen")


class FrozenBackend(Backend):
    """Baseline renderer: returns the identity reference unchanged (a frozen mouth)."""

    name = "frozen"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        return self.inner.audio_to_lip(mel, lookahead)

    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        return reference.copy()


@dataclass
class Track:
    lips: np.ndarray  # (N, 40, 2) canonical, NaN where lost
    gap: np.ndarray  # (N,)
    landmarks: list[np.ndarray | None]


def track_frames(frames: list[np.ndarray], times: np.ndarray) -> Track:
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
    return Track(lips, gap, lms)


def render(
    mode: str, bundle: ModelBundle, backend: Backend, frames: list[np.ndarray], times: np.ndarray,
    mel: audio.StaticMel, true_units: np.ndarray | None, lookahead_ms: float,
) -> list[np.ndarray]:  # fmt: skip
    be: Backend = FrozenBackend(backend) if mode == "frozen" else backend
    out = []
    with FaceTracker() as tr:
        pipe = DubPipeline(bundle, be, tr, PipelineConfig(lookahead_ms=lookahead_ms))
        for i, (f, t) in enumerate(zip(frames, times, strict=True)):
            img = f.copy()
            u = true_units[i] if (mode == "true-units" and true_units is not None) else None
            pipe.process(img, float(t), mel, units=u)
            out.append(img)
    return out


def score(
    out: list[np.ndarray], frames: list[np.ndarray], times: np.ndarray, gt: Track, size: int
) -> dict[str, float]:
    tr = track_frames(out, times)
    ok = np.isfinite(gt.gap) & np.isfinite(tr.gap)
    fm = face_mask(size)
    lower = fm.soft > 0.5
    ps, ss, sh = [], [], []
    for i in np.nonzero(ok)[0]:
        lm = gt.landmarks[i]
        assert lm is not None
        al = align.estimate(lm, size)
        a, b = align.warp_to_crop(out[i], al), align.warp_to_crop(frames[i], al)
        ps.append(metrics.psnr(a, b, lower))
        ss.append(metrics.ssim(a, b, lower))
        sh.append(metrics.sharpness_ratio(out[i], frames[i], metrics.mouth_box(lm, LIP_IDX)))
    return {
        "LMD": metrics.lmd(tr.lips[ok], gt.lips[ok]),
        "MOC": metrics.pearson(tr.gap[ok], gt.gap[ok]),
        "PSNR": float(np.mean(ps)),
        "SSIM": float(np.mean(ss)),
        "sharpness": float(np.nanmedian(sh)),
        "frames": int(ok.sum()),
        "tracked_out_of": len(out),
    }


def reconstruction(
    clip: Path, bundle: ModelBundle, backend: Backend, lookahead_ms: float
) -> dict[str, dict[str, float]]:
    frames, ts = [], []
    for fr in media.iter_frames(clip):
        frames.append(fr.image)
        ts.append(fr.time)
    times = np.asarray(ts)
    wav = media.load_audio(clip)
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(wav)))
    gt = track_frames(frames, times)
    ok = np.isfinite(gt.gap)
    raw = np.zeros((len(frames), bundle.n_units), np.float32)
    raw[ok] = bundle.basis.raw_units(gt.lips[ok])
    stats = UnitStats.fit(raw[ok])
    true_units = stats.normalize(raw)
    true_units[~ok] = bundle.closed_units
    res = {}
    for mode in MODES:
        out = render(mode, bundle, backend, frames, times, mel, true_units, lookahead_ms)
        res[mode] = score(out, frames, times, gt, bundle.crop_size)
        logger.info("%s %s %s", clip.name, mode, res[mode])
    return res


TTS_TEXT = (
    "Bob may buy a big map. Papa and mama baked apple pie. My father parked the car by the park. "
    "Maybe Bob is happy."
)


def dubbing_auc(
    clip: Path, bundle: ModelBundle, backend: Backend, lookahead_ms: float, workdir: Path
) -> dict[str, object]:
    """Dub ``clip`` with TTS speech of known phoneme timings; AUC of the inner gap between
    open-vowel frames (positives) and /p b m/ frames (negatives). 0.5 = no lip closure signal."""
    speech = tts.synthesize(TTS_TEXT, voice="en-us", rate=140).resampled(16000)
    fps = float(media.probe_video(clip).fps)
    n = math.ceil(speech.duration * fps)
    times = np.arange(n) / fps
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(speech.samples)))
    bil = tts.frames_with(speech, tts.BILABIALS, fps)[:n]
    opn = tts.frames_with(speech, tts.OPEN_VOWELS, fps)[:n]
    res: dict[str, object] = {"frames_open": int(opn.sum()), "frames_bilabial": int(bil.sum())}
    for mode in ("model", "frozen"):
        be: Backend = FrozenBackend(backend) if mode == "frozen" else backend
        src = LoopedFrames(clip, spool=True)
        frames = []
        try:
            with FaceTracker() as tr:
                pipe = DubPipeline(bundle, be, tr, PipelineConfig(lookahead_ms=lookahead_ms))
                for t in times:
                    img = src.at(float(t)).copy()
                    pipe.process(img, float(t), mel)
                    frames.append(img)
        finally:
            src.close()
        samples.write_clip(workdir / f"tts_{mode}.mp4", frames, fps, speech.samples, 16000)
        gap = track_frames(frames, times).gap
        ok = np.isfinite(gap)
        res[mode] = metrics.auc(gap[ok & opn], gap[ok & bil])
    return res


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    cols = ("LMD", "MOC", "PSNR", "SSIM", "sharpness")
    fmt = {"LMD": "{:.2f}", "MOC": "{:.3f}", "PSNR": "{:.2f}", "SSIM": "{:.3f}", "sharpness": "{:.3f}"}
    lines = ["| clip | mode | LMD ↓ | MOC ↑ | PSNR ↑ | SSIM ↑ | sharpness |", "|---|---|---|---|---|---|---|"]

    def row(name: str, mode: str, r: dict[str, float]) -> str:
        return f"| {name} | {mode} | " + " | ".join(fmt[c].format(r[c]) for c in cols) + " |"

    for clip, modes in results.items():
        lines += [row(clip, mode, r) for mode, r in modes.items()]
    for mode in MODES:
        mean = {c: float(np.mean([m[mode][c] for m in results.values()])) for c in cols}
        lines.append(row("**mean**", mode, mean))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="reconstruction, dubbing and speed evaluation")
    p.add_argument("--clips", type=Path, default=Path("../shared/media/clips"))
    p.add_argument("--audio", type=Path, default=Path("../shared/media/audio/french.wav"))
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/eval"))
    p.add_argument("--lookahead-ms", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    clips = sorted(c for c in args.clips.glob("speaker_*.mp4"))
    if not clips:
        print(f"evaluate: error: {args.clips}: no speaker_*.mp4 clips")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(args.model)
    backend = get_backend("onnx", bundle, BackendConfig(threads=args.threads))
    results = {c.stem: reconstruction(c, bundle, backend, args.lookahead_ms) for c in clips}
    report: dict[str, object] = {
        "model": str(bundle.root),
        "lookahead_ms": args.lookahead_ms,
        "reconstruction": results,
    }
    report["dubbing_auc"] = dubbing_auc(clips[0], bundle, backend, args.lookahead_ms, args.out)
    if not args.skip_speed and args.audio.is_file():
        t0 = time.perf_counter()
        rep = dub_file(
            DubOptions(clips[0], args.audio, args.out / "speed.mp4", model=args.model, threads=args.threads)
        )
        report["speed"] = {
            "clip": clips[0].name,
            "audio": args.audio.name,
            "frames": rep.frames,
            "wall_s": rep.wall,
            "frames_per_s": rep.frames_per_second,
            "x_realtime": rep.realtime_factor,
            "stage_ms_p50_p95": rep.percentiles(),
            "total_s": time.perf_counter() - t0,
        }
    md = table(results)
    (args.out / "eval.json").write_text(json.dumps(report, indent=1))
    (args.out / "eval.md").write_text(md + "\n")
    print(md)
    print("dubbing AUC (open vowels vs /p b m/):", report["dubbing_auc"])
    if "speed" in report:
        s = report["speed"]
        assert isinstance(s, dict)
        print(f"speed: {s['frames_per_s']:.1f} frames/s, {s['x_realtime']:.2f}x real time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
