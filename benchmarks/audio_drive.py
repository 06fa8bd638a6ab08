"""Audio-only drives on held-out people, rendered: the default audio stage against the fused one.

    python -m training.train_visemes ... --loo-bundles runs/visemes/loo     (one bundle per identity)
    python -m benchmarks.audio_drive --loo runs/visemes/loo --offsets runs/offsets_train.json \
        [--media $RTDUB_MEDIA/train] [--identities feifeili social_d10 social_d11 social_d20] \
        [--out runs/audio_drive]

For each identity, its real clips (``MEDIA/real_<identity>*.mp4``) are re-rendered with their own
audio (rtdub.measure.evaluation.reconstruct) four ways:

    frozen       the identity reference pasted back with no motion (the floor)
    true-units   the generator fed the clip's own lip units (the audio stage's ceiling)
    base         the default bundle's audio-to-lip model alone (today's default)
    fused        the same model mixed with the viseme recogniser, from the identity's
                 leave-one-out bundle: neither the recogniser nor its map saw this person

and scored on MOC (mouth-opening correlation), LMD, PSNR/SSIM of the lower face, mouth sharpness
and interior contrast, per clip and frame-weighted per identity. The clip's measured audio lag
(training.offset_check, ``--offsets``) is taken out of its audio first, as training did, so a
clip whose sound is late does not count against every drive alike. The default identities are
those no audio model of the default bundle trained on. A picture of mouth crops per identity
(original | base | fused, a few frames from the open half) goes to OUT/audio_drive_<identity>.png:
pictures of real people, so OUT is a run folder (never commit them); copy the .md and .json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from rtdub import atomic, audio
from rtdub.backends import BackendConfig, get_backend
from rtdub.defaults import MEDIA_ENV, media_path
from rtdub.measure.evaluation import ClipData, load_clip, reconstruct
from rtdub.measure.scoring import expert_crop
from rtdub.model import ModelBundle, load_bundle

IDENTITIES = ("feifeili", "social_d10", "social_d11", "social_d20")
ROWS = ("frozen", "true-units", "base", "fused")
SCORES = ("MOC", "LMD", "PSNR", "SSIM", "sharpness", "interior")
CROP = 96


def shifted(clip: ClipData, lag_s: float) -> ClipData:
    """``clip`` with its audio read ``lag_s`` later (the sound of the frame at t is at t + lag)."""
    k = int(round(lag_s * audio.MEL_FPS))
    mel = clip.mel.mel
    if k > 0:
        mel = mel[k:]
    elif k < 0:
        mel = np.concatenate([np.full((-k, mel.shape[1]), audio.SILENCE_MEL, np.float32), mel])
    return replace(clip, mel=audio.StaticMel(mel))


def lags(path: Path | None, min_shift: int = 2) -> dict[str, int]:
    """Clip name -> frames by which its sound lags the picture, from training.offset_check
    --json readings (decided ones with |shift| >= 2 frames, as training applies them)."""
    if path is None:
        return {}
    readings = json.loads(path.read_text())
    return {str(r["clip"]): int(r["shift"]) for r in readings if r["decided"] and abs(int(r["shift"])) >= min_shift}


def render(clip: ClipData, mode: str, bundle: ModelBundle, threads: int) -> tuple[dict[str, float], list[np.ndarray]]:
    backend = get_backend("onnx", bundle, BackendConfig(threads=threads))
    try:
        r = reconstruct(clip, mode, bundle, backend, 40.0, expert_crop_size=CROP)
    finally:
        backend.close()
    crops = [c if c is not None else np.zeros((CROP, CROP, 3), np.uint8) for c in r.expert_crops]
    return dict(r.scores), crops


def picture(clip: ClipData, crops: dict[str, list[np.ndarray]], path: Path, n: int = 6) -> None:
    """Mouth crops of ``n`` frames from the open half: rows original | base | fused."""
    gap = np.nan_to_num(clip.truth.gap, nan=-np.inf)
    idx = [i for i in np.argsort(-gap)[: max(n * 4, n)] if clip.truth.landmarks[i] is not None]
    idx = sorted(idx[:: max(1, len(idx) // n)][:n])
    rows = []
    for name in ("original", "base", "fused"):
        tiles = []
        for i in idx:
            if name == "original":
                lm = clip.truth.landmarks[i]
                assert lm is not None
                t = expert_crop(clip.frames[i], lm, CROP)
            else:
                t = crops[name][i]
            tiles.append(cv2.cvtColor(t, cv2.COLOR_RGB2BGR))
        rows.append(np.concatenate(tiles, 1))
    cv2.imwrite(str(path), np.concatenate(rows, 0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="audio-only drives on held-out people, rendered")
    p.add_argument("--loo", type=Path, required=True, help="training.train_visemes --loo-bundles folder")
    p.add_argument("--media", type=Path, default=None, help=f"real clips (default ${MEDIA_ENV}/train)")
    p.add_argument("--base", type=Path, default=None, help="the default bundle (default: the shipped one)")
    p.add_argument("--offsets", type=Path, default=None, help="training.offset_check --json readings")
    p.add_argument("--identities", nargs="+", default=list(IDENTITIES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/audio_drive"), help="a run folder: it gets pictures")
    args = p.parse_args(argv)
    media_dir = args.media or media_path("train")
    if media_dir is None or not media_dir.is_dir():
        print(f"audio_drive: error: no clips (give --media or set {MEDIA_ENV})", file=sys.stderr)
        return 2
    base = load_bundle(args.base).audio_model("base")
    lag = lags(args.offsets)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    per_clip: dict[str, dict[str, dict[str, float]]] = {}
    per_ident: dict[str, dict[str, dict[str, float]]] = {}
    for ident in args.identities:
        fused = load_bundle(args.loo / ident)
        clips = sorted(media_dir.glob(f"real_{ident}*.mp4"))
        if not clips or not fused.fused:
            print(f"audio_drive: error: {ident}: no clips in {media_dir} or no fused bundle in {args.loo}")
            return 2
        acc: dict[str, list[tuple[float, dict[str, float]]]] = {r: [] for r in ROWS}
        for path in clips:
            clip = load_clip(path, base)
            clip = shifted(clip, lag.get(path.stem, 0) / clip.fps)
            crops: dict[str, list[np.ndarray]] = {}
            per_clip[path.stem] = {}
            for row in ROWS:
                mode = row if row in ("frozen", "true-units") else "model"
                bundle = fused if row == "fused" else base
                scores, crops[row] = render(clip, mode, bundle, args.threads)
                per_clip[path.stem][row] = scores
                acc[row].append((float(scores["frames"]), scores))
                print(f"{path.stem:28s} {row:10s} " + "  ".join(f"{k} {scores[k]:.3f}" for k in SCORES), flush=True)
            if path == clips[0]:
                picture(clip, crops, args.out / f"audio_drive_{ident}.png")
        per_ident[ident] = {
            row: {
                k: float(np.average([s[k] for _, s in v], weights=[w for w, _ in v]))
                if all(np.isfinite(s[k]) for _, s in v)
                else float("nan")
                for k in SCORES
            }
            for row, v in acc.items()
        }
    doc = {
        "command": "python -m benchmarks.audio_drive " + " ".join(argv if argv is not None else sys.argv[1:]),
        "identities": per_ident,
        "clips": per_clip,
        "wall_s": round(time.time() - t0, 1),
    }
    atomic.write_text(args.out / "audio_drive.json", json.dumps(doc, indent=1) + "\n")
    lines = ["| identity | drive | " + " | ".join(SCORES) + " |", "|---|---|" + "---|" * len(SCORES)]
    for ident, rows in per_ident.items():
        for row, s in rows.items():
            lines.append(f"| {ident} | {row} | " + " | ".join(f"{s[k]:.3f}" for k in SCORES) + " |")
    mean = {row: {k: float(np.mean([per_ident[i][row][k] for i in per_ident])) for k in SCORES} for row in ROWS}
    for row, s in mean.items():
        lines.append(f"| **mean** | {row} | " + " | ".join(f"{s[k]:.3f}" for k in SCORES) + " |")
    print("\n".join(lines))
    atomic.write_text(args.out / "audio_drive_table.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
