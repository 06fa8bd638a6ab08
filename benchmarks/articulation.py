"""Do the rendered lips show each visual class? Closure on /p b m/, lower lip to the teeth on
/f v/, rounding on /u o w/, per drive (issue 18, item 3).

    python -m benchmarks.articulation [--faces DIR] [--max-faces 3] [--model DIR] [--out benchmarks/results]

Each face (the astronaut portrait and the first portraits of --faces, default $RTDUB_MEDIA/faces)
under gentle head motion is dubbed with espeak-ng speech of a sentence dense in those sounds, in
five languages, once per drive. The OUTPUT is tracked (a second face tracker) and, in the
canonical face frame, each frame's inner-lip gap and mouth width (corner to corner) are read.
The class of a frame is the espeak phoneme sounding at its centre (rtdub/drive/phones.py).
Three AUCs, 0.5 = no sign of the distinction, 1 = always:

    closure      gap on open-vowel frames > gap on /p b m/ frames
    labiodental  gap on open-vowel frames > gap on /f v/ frames (the lower lip meets the upper teeth)
    rounding     width on spread-vowel frames (i e) > width on rounded frames (u o w, y ø)

Drives: frozen (the reference pasted back: the floor), base (the audio-to-lip model alone),
fused (with the viseme recogniser: the default audio drive) and events (espeak's own phoneme
events through the phonetic model, as the ``tts`` source and ``--phonemes`` do). The sounds'
times come from the same espeak events the events drive reads, so for that drive the timing is
right by construction: its row tests what the model and the renderer make of each class.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from rtdub import audio, tts
from rtdub.backends import get_backend
from rtdub.defaults import MEDIA_ENV, media_path
from rtdub.drive.events import from_speech
from rtdub.drive.phones import (
    BILABIAL,
    LABIODENTAL,
    OPEN,
    ROUND_GLIDE,
    ROUNDED,
    SPREAD,
    espeak_class,
)
from rtdub.drive.phonetic import bundle_drive
from rtdub.engine import EngineConfig, build_pipeline
from rtdub.face.lipunits import inner_gap, to_canonical
from rtdub.face.tracker import FaceTracker
from rtdub.measure import metrics, samples
from rtdub.model import ModelBundle, load_bundle

from .common import write_results
from .drive_closure import face_images

FPS = 25.0
CORNERS = (61, 291)  # mediapipe mouth corners
SENTENCES = {
    "en-us": "Sue knew the food was too cool, but Phil gave five fine violets to Eve at the beach.",
    "de": "Du suchst die Blume im Wald, wir fahren viele Wagen bis Wien, sieh die Fische.",
    "fr": "Où vous voulez, le fou a vu six fleurs vives, et il lit vite ici.",
    "it": "Un uomo vuole fare una foto, vive a Firenze vicino al fiume, e vede i fichi.",
    "es": "Tú usas uvas y fruta fresca, Felipe fue a Figueras y vive aquí.",
}
DRIVES = ("frozen", "base", "fused", "events")


def frame_classes(speech: tts.Speech, n: int) -> np.ndarray:
    """The visual class of the phoneme sounding at each frame's centre (-1: none)."""
    out = np.full(n, -1, np.int64)
    for p in speech.phonemes:
        a, b = int(np.ceil(p.start * FPS)), int(np.ceil(p.end * FPS))
        out[max(a, 0) : min(b, n)] = espeak_class(p.symbol)
    return out


def render(frames: list[np.ndarray], speech: tts.Speech, bundle: ModelBundle, drive: str) -> tuple[np.ndarray, ...]:
    """The output's inner gap and mouth width per frame (canonical units; NaN where untracked)."""
    n = len(frames)
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(speech.samples)))
    variant = bundle.audio_model("base" if drive == "base" else "fused")
    backend = get_backend("onnx", variant)
    if drive == "frozen":
        from rtdub.measure.evaluation import FrozenBackend

        backend = FrozenBackend(backend, variant.fields)
    gap, width = np.full(n, np.nan), np.full(n, np.nan)
    try:
        with FaceTracker() as render_tracker, FaceTracker() as score_tracker:
            pipe = build_pipeline(EngineConfig.offline(), render_tracker, variant, backend)
            if drive == "events":
                pipe.set_drive(
                    bundle_drive(variant, from_speech(speech), pipe.audio, speech.samples, speech.sample_rate)
                )
            for i, f in enumerate(frames):
                img = np.array(f, copy=True)
                pipe.process(img, i / FPS, mel)
                o = score_tracker.track(img, i / FPS)
                if o is not None:
                    c = to_canonical(o.landmarks)
                    gap[i] = inner_gap(c)
                    width[i] = float(np.linalg.norm(c[CORNERS[0]] - c[CORNERS[1]]))
    finally:
        backend.close()
    return gap, width


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=Path, default=media_path("faces"), help=f"portraits (default ${MEDIA_ENV}/faces)")
    p.add_argument("--max-faces", type=int, default=3)
    p.add_argument("--languages", default=",".join(SENTENCES))
    p.add_argument("--drives", default=",".join(DRIVES))
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    drives = [d for d in args.drives.split(",") if d]
    if bad := [d for d in drives if d not in DRIVES] + [v for v in args.languages.split(",") if v not in SENTENCES]:
        print(f"articulation: error: unknown {bad}", file=sys.stderr)
        return 2
    bundle = load_bundle(args.model)
    faces = face_images(args.faces, args.max_faces)
    t0 = time.time()
    rows = []
    for lang in [v for v in args.languages.split(",") if v]:
        speech = tts.synthesize(SENTENCES[lang], voice=lang, rate=150).resampled(audio.SAMPLE_RATE)
        n = int(np.ceil(speech.duration * FPS)) + 1
        cls = frame_classes(speech, n)
        for name, img in faces.items():
            frames = list(samples.head_motion(img, n, FPS, seed=3))
            for drive in drives:
                gap, width = render(frames, speech, bundle, drive)
                ok = np.isfinite(gap)
                row = {
                    "language": lang,
                    "face": name,
                    "drive": drive,
                    "closure": metrics.auc(gap[ok & (cls == OPEN)], gap[ok & (cls == BILABIAL)]),
                    "labiodental": metrics.auc(gap[ok & (cls == OPEN)], gap[ok & (cls == LABIODENTAL)]),
                    "rounding": metrics.auc(
                        width[ok & (cls == SPREAD)], width[ok & ((cls == ROUNDED) | (cls == ROUND_GLIDE))]
                    ),
                    "frames": {
                        "open": int((cls == OPEN).sum()),
                        "bilabial": int((cls == BILABIAL).sum()),
                        "labiodental": int((cls == LABIODENTAL).sum()),
                        "spread": int((cls == SPREAD).sum()),
                        "rounded": int(((cls == ROUNDED) | (cls == ROUND_GLIDE)).sum()),
                    },
                }
                rows.append(row)
                print(
                    f"{lang:6s} {name:12s} {drive:7s} closure {row['closure']:.3f} "
                    f"labiodental {row['labiodental']:.3f} rounding {row['rounding']:.3f}",
                    flush=True,
                )
    keys = ("closure", "labiodental", "rounding")
    summary = {d: {k: float(np.nanmean([r[k] for r in rows if r["drive"] == d])) for k in keys} for d in drives}
    doc = {
        "model": str(bundle.root),
        "faces": list(faces),
        "rows": rows,
        "summary": summary,
        "wall_s": time.time() - t0,
    }
    lines = [
        "# Does each visual class show? (AUC, 0.5 = no)",
        "",
        f"`python -m benchmarks.articulation` — {len(faces)} faces x {len({r['language'] for r in rows})} "
        "languages, espeak-ng speech",
        "",
        "| drive | closure /p b m/ | lower lip to teeth /f v/ | rounding /u o w/ |",
        "|---|---|---|---|",
        *[f"| {d} | {s['closure']:.3f} | {s['labiodental']:.3f} | {s['rounding']:.3f} |" for d, s in summary.items()],
    ]
    write_results(args.out, "articulation", doc, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
