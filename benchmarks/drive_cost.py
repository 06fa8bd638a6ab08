"""Per-frame cost of each drive's lip stage on this host (issue 18: recogniser + phoneme model
together <= 3 ms a frame on 2 cores).

    python -m benchmarks.drive_cost [--model engines/default] [--threads 1] [--seconds 20] [--out benchmarks/results]

One video frame at 25 fps of espeak-ng speech, as the pipeline asks for it (``Drive.units_at``,
mel window and smoothing included), for:

    base       the audio-to-lip model alone (``--audio-model base``)
    fused      the audio-to-lip model and the viseme recogniser in one graph (the default where
               the bundle has it): the recogniser's cost is fused - base
    events     espeak's phoneme events through the phonetic model (its fallback, the fused audio
               drive, runs every frame too, to keep its smoothing state: see PhoneticDrive)

and, per second of dubbed audio, the text alignment of ``rtdub dub --text`` (done once per file).
All rows in one run, interleaved, so the host's load affects them alike; p50 and p95 in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from rtdub import atomic, audio, tts
from rtdub.backends import BackendConfig, get_backend
from rtdub.drive.audio import AudioDriveConfig, AudioStage
from rtdub.drive.events import from_speech
from rtdub.drive.phonetic import bundle_drive
from rtdub.drive.textalign import align_text
from rtdub.model import load_bundle

TEXT = "Bob made a map, and Pam bought a pair of big maple boats at the bay. "
FPS = 25.0


def pct(x: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(x, 50)), 3), "p95": round(float(np.percentile(x, 95)), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="per-frame cost of each drive")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1, help="inference threads (a stream's preset: 1)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of speech to drive")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    bundle = load_bundle(args.model)
    if not bundle.fused:
        print(f"drive_cost: note: {bundle.root} has no fused audio drive; fused = base")
    speech = tts.synthesize(TEXT * max(1, int(args.seconds // 5)), voice="en-us")
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(speech.samples)))
    cfg = AudioDriveConfig(lookahead_ms=40.0)
    stages = {}
    for name in ("base", "fused"):
        b = bundle.audio_model(name)
        stages[name] = AudioStage(b, get_backend("onnx", b, BackendConfig(threads=args.threads)), cfg)
    events = bundle_drive(
        bundle,
        from_speech(speech),
        AudioStage(bundle, get_backend("onnx", bundle), cfg),
        speech.samples,
        speech.sample_rate,
    )
    times = np.arange(0.0, len(speech.samples) / speech.sample_rate, 1 / FPS)
    ms: dict[str, list[float]] = {"base": [], "fused": [], "events": []}
    for t in times:  # interleaved: the same load for every row
        for name, drive in (("base", stages["base"]), ("fused", stages["fused"]), ("events", events)):
            t0 = time.perf_counter()
            drive.units_at(mel, float(t))
            ms[name].append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    aligned = align_text(TEXT * max(1, int(args.seconds // 5)), "en", speech.samples, speech.sample_rate)
    align_s = time.perf_counter() - t0
    per_frame = {k: pct(v[10:]) for k, v in ms.items()}
    recogniser = round(per_frame["fused"]["p50"] - per_frame["base"]["p50"], 3)
    doc = {
        "command": "python -m benchmarks.drive_cost " + " ".join(argv or []),
        "model": str(bundle.root),
        "fused": bundle.fused,
        "threads": args.threads,
        "frames": len(times),
        "load_average": os.getloadavg(),
        "ms_per_frame": per_frame,
        "recogniser_ms_per_frame_p50": recogniser,
        "text_alignment_ms_per_audio_second": round(align_s * 1000 / (len(speech.samples) / speech.sample_rate), 2),
        "text_aligned": aligned.ok,
    }
    lines = [
        "| drive | p50 ms/frame | p95 ms/frame |",
        "|---|---|---|",
        *[f"| {k} | {v['p50']:.3f} | {v['p95']:.3f} |" for k, v in per_frame.items()],
        "",
        f"The recogniser (fused - base, p50): {recogniser:.3f} ms a frame. Text alignment: "
        f"{doc['text_alignment_ms_per_audio_second']} ms per second of audio, once per file. "
        f"{len(times)} frames, {args.threads} thread(s), load average {doc['load_average'][0]:.1f}.",
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "drive_cost.json", json.dumps(doc, indent=1) + "\n")
    atomic.write_text(args.out / "drive_cost.md", "# Per-frame cost of each drive\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
