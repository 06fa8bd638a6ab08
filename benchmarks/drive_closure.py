"""Lip closure of TTS dubbing per drive: languages x faces, phoneme times known.

    python -m benchmarks.drive_closure [--faces DIR] [--model DIR] [--out benchmarks/results]

Each face (the astronaut portrait, plus the portraits in --faces, default $RTDUB_MEDIA/faces)
under gentle head motion is dubbed with espeak-ng speech in each language, once per drive:
``audio`` (the audio-to-lip stage alone), ``events`` (espeak's own phoneme events through the
bundle's phonetic model), ``text`` (the sentence aligned to speech in another voice variant,
faster, higher and with an extra pause, as ``rtdub dub --text``) and ``frozen`` (the identity
reference pasted back: the floor). The
score is rtdub.measure.evaluation.lip_closure's AUC: the tracked inner-lip gap of the OUTPUT on
open-vowel frames against the frames where the lips must close for /p b m/ (1 = always
separated, 0.5 = chance). Writes OUT/drive_closure.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from rtdub import atomic, tts
from rtdub.backends import get_backend
from rtdub.defaults import MEDIA_ENV, media_path
from rtdub.measure import samples
from rtdub.measure.evaluation import lip_closure, tts_speech
from rtdub.model import load_bundle

FPS = 25.0
# sentences dense in /p b m/ and open vowels, one per language (espeak voice)
SENTENCES = {
    "en-us": "Bob made a map, and Pam bought a pair of big maple boats at the bay.",
    "es": "Papá baja a la playa a buscar ambas barcas para mamá.",
    "it": "Il babbo porta la mamma a mangiare a Parma, bambino.",
    "de": "Papa backt am Abend Brot, Mama malt ein paar bunte Blumen.",
    "fr": "Papa a mis la pomme et le pain dans le panier de maman.",
}


def face_images(folder: Path | None, limit: int) -> dict[str, np.ndarray]:
    out = {"astronaut": samples.portrait()}
    if folder is not None and folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in {".png", ".jpg", ".jpeg"} or len(out) >= limit:
                continue
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                continue
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            scale = 640 / max(img.shape[:2])
            if scale < 1:
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            out[p.stem] = np.ascontiguousarray(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=Path, default=media_path("faces"), help=f"portraits (default ${MEDIA_ENV}/faces)")
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--languages", default=",".join(SENTENCES), help="comma list of espeak voices")
    p.add_argument("--drives", default="frozen,audio,events,text")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--lookahead-ms", type=float, default=40.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    if (problem := atomic.writable_dir(args.out / "drive_closure.json")) is not None:
        print(f"drive_closure: error: --out: {problem}", file=sys.stderr)
        return 2
    langs = [v for v in args.languages.split(",") if v]
    unknown = [v for v in langs if v not in SENTENCES]
    if unknown:
        print(f"drive_closure: error: no sentence for {unknown}; known: {', '.join(SENTENCES)}", file=sys.stderr)
        return 2
    drives = [d for d in args.drives.split(",") if d]
    bundle = load_bundle(args.model)
    backend = get_backend("onnx", bundle)
    faces = face_images(args.faces, args.max_faces)
    t0 = time.time()
    rows = []
    for lang in langs:
        plain = tts_speech(SENTENCES[lang], voice=lang, rate=150)
        # the text drive gets a voice unlike the one its aligner speaks: another variant, faster,
        # higher, with a pause espeak would not make (the dub's own events are only the truth)
        other = tts.synthesize(SENTENCES[lang].replace(",", ", ...", 1), voice=f"{lang}+f3", rate=185, pitch=75)
        varied = other.resampled(16000)
        for name, img in faces.items():
            for drive in drives:
                speech = varied if drive == "text" else plain
                n = int(np.ceil(speech.duration * FPS)) + 1
                lc = lip_closure(
                    samples.head_motion(img, n, FPS, seed=3),
                    speech,
                    FPS,
                    bundle,
                    backend,
                    args.lookahead_ms,
                    frozen=drive == "frozen",
                    drive=drive if drive in ("events", "text") else "audio",
                    text=(SENTENCES[lang], lang) if drive == "text" else None,
                )
                rows.append({"language": lang, "face": name, "drive": drive, "auc": lc.auc, "open": lc.frames_open,
                             "closed": lc.frames_bilabial})  # fmt: skip
                print(f"{lang:6s} {name:12s} {drive:7s} AUC {lc.auc:.3f}", flush=True)
    summary = {}
    for drive in drives:
        v = np.array([r["auc"] for r in rows if r["drive"] == drive], np.float64)
        summary[drive] = {"mean": float(np.nanmean(v)), "min": float(np.nanmin(v)), "n": int(np.isfinite(v).sum())}
    result = {"model": str(bundle.root), "lookahead_ms": args.lookahead_ms, "faces": list(faces), "languages": langs,
              "rows": rows, "summary": summary, "wall_s": time.time() - t0}  # fmt: skip
    atomic.write_text(args.out / "drive_closure.json", json.dumps(result, indent=1) + "\n")
    lines = ["# Lip closure of TTS dubbing per drive", "", "| drive | mean AUC | min | trials |", "|---|---|---|---|"]
    lines += [f"| {d} | {s['mean']:.3f} | {s['min']:.3f} | {s['n']} |" for d, s in summary.items()]
    atomic.write_text(args.out / "drive_closure.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
