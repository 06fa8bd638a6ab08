"""Lip closure of TTS dubbing with voices that are not espeak-ng's (CMU Flite), per drive.

    apt-get install flite     # the Debian package; voices slt, awb, rms, kal16 are built in
    python -m benchmarks.flite_closure [--faces DIR] [--max-faces 2] [--model DIR] [--out benchmarks/results]

benchmarks/drive_closure.py dubs espeak-ng speech, and the viseme recogniser of the fused audio
drive was trained on espeak-ng voices: its figures there are in-domain. Flite's voices (a
different synthesiser: diphone and statistical-parametric voices recorded from four people)
are a voice the recogniser, the audio-to-lip model and the text aligner never heard. Flite
reports each segment's end time (``-psdur``), which is the ground truth here: the AUC of
rtdub.measure.evaluation.lip_closure (the output's tracked inner-lip gap on open-vowel frames
against the frames where /p b m/ close the lips) for

    frozen     the identity reference pasted back (the floor)
    base       the audio-to-lip model alone (``--audio-model base``)
    fused      the audio-to-lip model mixed with the viseme recogniser (the default)
    text       the sentence aligned to the Flite speech (``rtdub dub --text``): espeak's rendering
               of the text, time-warped onto a voice it is not
    events     Flite's own segments as phoneme events (``rtdub dub --phonemes``): the timing
               is the ground truth's, so this row tests the model and the renderer only

English only (Flite's voices are English). Writes OUT/flite_closure.json and .md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rtdub import media, tts
from rtdub.backends import get_backend
from rtdub.defaults import MEDIA_ENV, media_path
from rtdub.measure import samples
from rtdub.measure.evaluation import lip_closure
from rtdub.model import load_bundle

from .common import write_results
from .drive_closure import face_images

FPS = 25.0
VOICES = ("slt", "awb", "rms", "kal16")
SENTENCES = (
    "Bob made a map, and Pam bought a pair of big maple boats at the bay.",
    "My mom put a lamp by the window, and Bart combed his hair before the party.",
)
# Flite's phone set (CMU, lower case) -> an espeak mnemonic of the same visual class: the open
# vowels and the bilabials are what lip_closure scores; the rest keep their espeak names
ARPABET = {
    "aa": "A:", "ae": "a", "ah": "V", "ao": "O:", "aw": "aU", "ay": "aI", "b": "b", "ch": "tS", "d": "d",
    "dh": "D", "eh": "E", "er": "3:", "ey": "eI", "f": "f", "g": "g", "hh": "h", "ih": "I", "iy": "i:",
    "jh": "dZ", "k": "k", "l": "l", "m": "m", "n": "n", "ng": "N", "ow": "oU", "oy": "OI", "p": "p", "r": "r",
    "s": "s", "sh": "S", "t": "t", "th": "T", "uh": "U", "uw": "u:", "v": "v", "w": "w", "y": "j", "z": "z",
    "zh": "Z", "ax": "@", "pau": "_",
}  # fmt: skip
DRIVES = ("frozen", "base", "fused", "text", "events")


def flite_speech(text: str, voice: str, workdir: Path) -> tts.Speech:
    """Flite's speech of ``text`` at 16 kHz with its segments as espeak-named phonemes."""
    wav = workdir / f"{voice}.wav"
    out = subprocess.run(
        ["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(wav)], capture_output=True, text=True, check=True
    ).stdout
    phonemes, start = [], 0.0
    for item in out.split():
        name, end = item.rsplit(":", 1)
        phonemes.append(tts.Phoneme(ARPABET.get(name, name), start, float(end)))
        start = float(end)
    x = media.load_audio(wav)  # 16 kHz mono float32
    return tts.Speech(x, 16000, tuple(phonemes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=Path, default=media_path("faces"), help=f"portraits (default ${MEDIA_ENV}/faces)")
    p.add_argument("--max-faces", type=int, default=2)
    p.add_argument("--voices", default=",".join(VOICES))
    p.add_argument("--drives", default=",".join(DRIVES))
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--lookahead-ms", type=float, default=40.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    if shutil.which("flite") is None:
        print("flite_closure: error: flite is not installed (apt-get install flite)", file=sys.stderr)
        return 2
    drives = [d for d in args.drives.split(",") if d]
    if bad := [d for d in drives if d not in DRIVES]:
        print(f"flite_closure: error: unknown drives {bad}; known: {', '.join(DRIVES)}", file=sys.stderr)
        return 2
    bundle = load_bundle(args.model)
    variants = {name: bundle.audio_model(name) for name in ("base", "fused")}
    backends = {name: get_backend("onnx", b) for name, b in variants.items()}
    faces = face_images(args.faces, args.max_faces)
    t0 = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for voice in [v for v in args.voices.split(",") if v]:
            for k, sentence in enumerate(SENTENCES):
                speech = flite_speech(sentence, voice, Path(tmp))
                for name, img in faces.items():
                    for drive in drives:
                        which = "base" if drive == "base" else "fused"
                        n = int(np.ceil(speech.duration * FPS)) + 1
                        lc = lip_closure(
                            samples.head_motion(img, n, FPS, seed=3),
                            speech,
                            FPS,
                            variants[which],
                            backends[which],
                            args.lookahead_ms,
                            frozen=drive == "frozen",
                            drive=drive if drive in ("events", "text") else "audio",
                            text=(sentence, "en") if drive == "text" else None,
                        )
                        rows.append({"voice": voice, "sentence": k, "face": name, "drive": drive, "auc": lc.auc,
                                     "open": lc.frames_open, "closed": lc.frames_bilabial})  # fmt: skip
                        print(f"{voice:6s} s{k} {name:12s} {drive:7s} AUC {lc.auc:.3f}", flush=True)
    for be in backends.values():
        be.close()
    summary = {}
    for drive in drives:
        v = np.array([r["auc"] for r in rows if r["drive"] == drive], np.float64)
        summary[drive] = {"mean": float(np.nanmean(v)), "min": float(np.nanmin(v)), "n": int(np.isfinite(v).sum())}
    result = {"model": str(bundle.root), "fused": bundle.fused, "lookahead_ms": args.lookahead_ms,
              "faces": list(faces), "voices": args.voices.split(","), "rows": rows, "summary": summary,
              "wall_s": time.time() - t0}  # fmt: skip
    lines = [
        "# Lip closure of TTS dubbing with Flite voices (not espeak-ng) per drive",
        "",
        "| drive | mean AUC | min | trials |",
        "|---|---|---|---|",
        *[f"| {d} | {s['mean']:.3f} | {s['min']:.3f} | {s['n']} |" for d, s in summary.items()],
    ]
    write_results(args.out, "flite_closure", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
