"""Enrolment measured on people the generic model never saw (issue 19).

    python -m benchmarks.enroll_eval [--media DIR] [--people d6,d10,...,obama] [--minutes 5]
        [--steps N] [--eval-seconds 20] [--out runs/enroll_eval]

Each person is enrolled (training.enroll.enroll) on the first 65 % of their footage and scored
on the rest: the six ``train/real_social_d*`` clips with audio (new to the project: the generic
model never trained on them), and Obama enrolled on clip1 + clip2 and scored on clip3 (the
generic model DID train on all three Obama clips: his row measures what enrolment adds to a
person the generic model already knows, not generalisation). Bundles scored on the same
held-back frames (rtdub.measure.evaluation.reconstruct), driven by the frames' own lip units
(true-units) and by their own audio (model):

    generic          the base bundle (causal reference from the stream)
    enrolled         the enrolled bundle (its fine-tuned generator and its reference bank)
    enrolled-fast    the same, the bank re-picked every 0.12 s by the target of the last 0.2 s
    enrolled-start   the same, the bank for the first second only, then the causal pick
    enrolled-causal  the fine-tuned generator with the causal reference (the bank left out)
    generic-bank     the base generator with the enrolled reference bank

Writes OUT/enroll_eval.json, OUT/enroll_eval.md and, per person, OUT/<person>/mouths.png:
mouth crops of held-back frames, generic | enrolled | original, rows by mouth opening, and
OUT/<person>/mouths_all.png with the ablations (enrolled-fast, enrolled-causal, generic-bank).
Resumable: a person whose bundle exists is not enrolled again, and variants already in
OUT/enroll_eval.json are not scored again. An existing enrolled bundle gets the base bundle's
current audio stage before scoring (enrolment copies it; the base's may have changed since).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtdub import atomic
from rtdub.backends import BackendConfig, get_backend
from rtdub.defaults import MEDIA_ENV, media_path
from rtdub.face.lipunits import LIP_IDX
from rtdub.face.tracker import FaceTracker
from rtdub.measure.evaluation import ClipData
from rtdub.model import ModelBundle, load_bundle
from rtdub.render.pipeline import DubPipeline, PipelineConfig
from rtdub.render.reference import ReferenceConfig
from training.enroll import EnrollConfig, enroll, score, tail_clip
from training.enroll_data import Source, attach_person_units, load_person_clip, prepare_source

logger = logging.getLogger("benchmarks.enroll_eval")

SOCIAL = ("d6", "d10", "d11", "d12", "d14", "d20")
TRAIN_UNTIL = 0.65
VARIANTS = ("generic", "enrolled", "enrolled-fast", "enrolled-start", "enrolled-causal", "generic-bank")
MODES = ("true-units", "model")
KEYS = ("LMD", "MOC", "PSNR", "SSIM", "sharpness", "interior")


def sources(person: str, media: Path) -> list[Source]:
    if person == "obama":
        return [
            Source(media / "train" / "real_Obama_clip1.mp4", 1.0),
            Source(media / "train" / "real_Obama_clip2.mp4", 1.0),
            Source(media / "train" / "real_Obama_clip3.mp4", 0.0),
        ]
    return [Source(media / "train" / f"real_social_{person}.mp4", TRAIN_UNTIL)]


# the bank re-picked every 0.12 s by the target of the last 0.2 s: it follows each opening
FAST_BANK = ReferenceConfig(refresh=0.12, bank_window=0.2)
# the bank for the stream's first second only, then the causal pick from the stream
START_BANK = ReferenceConfig(bank_use="start")


def variants(base: ModelBundle, enrolled: ModelBundle) -> dict[str, tuple[ModelBundle, ReferenceConfig | None]]:
    return {
        "generic": (base, None),
        "enrolled": (enrolled, None),
        "enrolled-fast": (enrolled, FAST_BANK),
        "enrolled-start": (enrolled, START_BANK),
        "enrolled-causal": (dataclasses.replace(enrolled, references=()), None),
        "generic-bank": (dataclasses.replace(enrolled, generator_path=base.generator_path), None),
    }


def sync_audio_stage(base: ModelBundle, bundle_path: Path) -> bool:
    """Give an enrolled bundle the base bundle's current audio stage (enrolment copies it
    unchanged: a bundle enrolled before the base's audio drive changed would otherwise be
    compared, driven by the audio, with another model). True when it was replaced."""
    base_m = json.loads((base.root / "manifest.json").read_text())
    mf = bundle_path / "manifest.json"
    m = json.loads(mf.read_text())
    files = [base_m["a2l"][k] for k in ("file", "baseline") if base_m["a2l"].get(k)]
    same = m["a2l"] == base_m["a2l"] and all(
        (bundle_path / f).is_file() and (bundle_path / f).read_bytes() == (base.root / f).read_bytes() for f in files
    )
    if same:
        return False
    for f in files:
        shutil.copy2(base.root / f, bundle_path / f)
    m["a2l"] = base_m["a2l"]
    atomic.write_text(mf, json.dumps(m, indent=1))
    logger.warning("%s: the base bundle's audio stage changed since enrolment: copied its current one", bundle_path)
    return True


def mouth_box(lm: np.ndarray, aspect: float = 0.75) -> tuple[int, int, int, int]:
    """A box around the lips (margin 40 %) with height/width ``aspect``."""
    pts = lm[LIP_IDX]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 1.4
    h = w * aspect
    return int(cx - w / 2), int(cy - h / 2), int(cx + w / 2), int(cy + h / 2)


def render_frames(
    clip: ClipData, bundle: ModelBundle, picks: list[int], lookahead_ms: float, reference: ReferenceConfig | None = None
) -> dict[int, np.ndarray]:
    """The frames ``picks`` of ``clip`` rendered from its true units (the pipeline runs over
    every frame before them, so its state is what a real run has)."""
    backend = get_backend("onnx", bundle, BackendConfig(threads=2))
    out = {}
    pcfg = PipelineConfig(lookahead_ms=lookahead_ms)
    if reference is not None:
        pcfg = dataclasses.replace(pcfg, reference=reference)
    with FaceTracker() as tr:
        pipe = DubPipeline(bundle, backend, tr, pcfg)
        for i in range(max(picks) + 1):
            img = clip.frames[i].copy()
            pipe.process(img, float(clip.times[i]), clip.mel, units=clip.true_units[i])
            if i in picks:
                out[i] = img
    backend.close()
    return out


def mouths_picture(
    clip: ClipData, columns: list[tuple[str, dict[int, np.ndarray]]], picks: list[int], path: Path
) -> None:
    """Mouth crops of the frames ``picks``: one column per (label, rendered frames), then the
    original's; one row per frame."""
    cw, ch = 192, 144
    labels = [label for label, _ in columns] + ["original"]
    rows = []
    for i in picks:
        lm = clip.truth.landmarks[i]
        assert lm is not None
        x0, y0, x1, y1 = mouth_box(lm)
        cells = []
        for img in [frames[i] for _, frames in columns] + [clip.frames[i]]:
            pad = np.pad(img, ((ch, ch), (cw, cw), (0, 0)), mode="edge")
            cut = pad[y0 + ch : y1 + ch, x0 + cw : x1 + cw]
            cells.append(cv2.resize(cut, (cw, ch), interpolation=cv2.INTER_CUBIC))
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0))) for c in cells], axis=1))
    pic = np.concatenate(rows, axis=0)
    head = np.full((24, pic.shape[1], 3), 255, np.uint8)
    for k, label in enumerate(labels):
        cv2.putText(head, label, (k * (cw + 4) + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), np.concatenate([head, pic], axis=0)[:, :, ::-1])


def picture_frames(clip: ClipData, n: int = 6) -> list[int]:
    """Tracked frames at spread quantiles of the true mouth opening, at least 0.5 s apart."""
    gap = clip.truth.gap
    ok = np.nonzero(np.isfinite(gap))[0]
    ok = ok[ok >= min(len(clip.frames) - 1, int(clip.fps))]  # past the causal pick's first second
    order = ok[np.argsort(gap[ok])]
    picks: list[int] = []
    for q in np.linspace(0.05, 0.98, n * 3):
        i = int(order[int(q * (len(order) - 1))])
        if all(abs(i - j) >= clip.fps / 2 for j in picks):
            picks.append(i)
        if len(picks) == n:
            break
    return sorted(picks, key=lambda i: gap[i])


def evaluate_person(
    person: str, media: Path, out: Path, base: ModelBundle, args: argparse.Namespace, previous: dict[str, Any]
) -> dict[str, Any]:
    srcs = sources(person, media)
    pdir = out / person
    bundle_path = pdir / "bundle"
    t0 = time.monotonic()
    cfg = EnrollConfig(
        minutes=args.minutes,
        steps=args.steps,
        eval_seconds=0.0,
        min_seconds=3.0,
        threads=args.threads,
    )
    if not (bundle_path / "manifest.json").is_file():
        enroll(srcs, bundle_path, base.root, cfg)
    enroll_s = time.monotonic() - t0
    audio_synced = sync_audio_stage(base, bundle_path)
    enrolled = load_bundle(bundle_path)
    # the held-back frames, prepared apart from the enrolment's work (which it deletes)
    clips = []
    for k, s in enumerate(srcs):
        prep = prepare_source(s.path, pdir / f"eval_v{k}.npz", base.crop_size)
        clips.append(load_person_clip(s, prep))
    person_units = attach_person_units(clips, base.basis)
    tails = []
    for pc in clips:
        d = tail_clip(pc, person_units, base.basis, args.eval_seconds, 480)
        if d is not None:
            tails.append((d, pc.clip.has_audio))
    res: dict[str, Any] = {
        "sources": [s.path.name for s in srcs],
        "train_until": [s.train_until for s in srcs],
        "enrolment": enrolled.info["enrolment"],
        "enroll_seconds": previous.get("enroll_seconds", enroll_s),
        "audio_stage_synced": previous.get("audio_stage_synced", audio_synced),
        "held_back_seconds": sum(float(d.times[-1]) for d, _ in tails),
        "scores": dict(previous.get("scores", {})),  # variants scored before are kept
    }
    for name, (b, ref) in variants(base, enrolled).items():
        if name in res["scores"] or (args.variants and name not in args.variants.split(",")):
            continue
        res["scores"][name] = score(tails, b, MODES, cfg, ref)
        logger.info("%s %s %s", person, name, res["scores"][name])
    clip = tails[0][0]
    picks = picture_frames(clip)
    # the picture of the issue (generic | enrolled | original), and one with the ablations
    shown = ("generic", "enrolled", "enrolled-fast", "enrolled-causal", "generic-bank")
    rendered = {}
    for name, (b, ref) in variants(base, enrolled).items():
        if name in shown:
            rendered[name] = render_frames(clip, b, picks, cfg.lookahead_ms, ref)
    mouths_picture(clip, [(n, rendered[n]) for n in shown[:2]], picks, pdir / "mouths.png")
    mouths_picture(clip, [(n, rendered[n]) for n in shown], picks, pdir / "mouths_all.png")
    res["picture"] = str(pdir / "mouths.png")
    res["picture_ablations"] = str(pdir / "mouths_all.png")
    return res


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for mode in MODES:
        lines += [f"\n### driven by {'the true units' if mode == 'true-units' else 'the audio'} ({mode})\n"]
        lines += ["| person | bundle | " + " | ".join(KEYS) + " | frames |", "|---" * (len(KEYS) + 3) + "|"]
        for person, r in results.items():
            for v in VARIANTS:
                s = r["scores"].get(v, {}).get(mode)
                if s is None:
                    continue
                cells = " | ".join(f"{s[k]:.3f}" for k in KEYS)
                lines.append(f"| {person} | {v} | {cells} | {s['frames']:.0f} |")
        rows = [r["scores"] for r in results.values() if mode in r["scores"].get("generic", {})]
        if rows:
            lines.append("")
            for v in VARIANTS:
                mean = {k: np.nanmean([s[v][mode][k] for s in rows]) for k in KEYS}
                lines.append(f"mean {v} ({len(rows)} people): " + ", ".join(f"{k} {mean[k]:.3f}" for k in KEYS))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--media", type=Path, default=None, help=f"shared media folder (default ${MEDIA_ENV})")
    p.add_argument("--people", default=",".join((*SOCIAL, "obama")))
    p.add_argument("--model", type=Path, default=None, help="the generic bundle (default: engines/default)")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=0, help="a fixed number of fine-tuning steps instead of --minutes")
    p.add_argument("--eval-seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/enroll_eval"))
    p.add_argument("--variants", default="", help=f"score only these (comma-separated) of {','.join(VARIANTS)}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    media = args.media or media_path()
    if media is None or not (media / "train").is_dir():
        print(f"enroll_eval: error: no media folder (give --media or set ${MEDIA_ENV})", file=sys.stderr)
        return 2
    base = load_bundle(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "enroll_eval.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for person in args.people.split(","):
        results[person] = evaluate_person(person, media, args.out, base, args, results.get(person, {}))
        atomic.write_text(results_path, json.dumps(results, indent=1))
    atomic.write_text(args.out / "enroll_eval.md", table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
