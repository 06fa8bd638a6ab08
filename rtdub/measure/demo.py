"""``make demo``: build a sample from material installed packages ship, then dub it.

The sample is scikit-image's astronaut portrait with gentle synthetic head motion, and a
German sentence from espeak-ng (through the ``espeakng-loader`` wheel). Nothing is
downloaded and ``../shared`` is not needed. Writes ``out/demo.mp4`` (the dubbed video) and
``out/demo_compare.mp4`` (input | output side by side).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import tts
from ..dub import DubOptions, dub_file
from ..engine import EngineConfig
from . import samples

TEXT = "Guten Tag! Willkommen zu unserer Besprechung. Heute sprechen wir über die Pläne für das nächste Jahr."


def build_sample(out: Path, voice: str = "de", video_seconds: float = 5.0, fps: float = 25.0) -> tuple[Path, Path]:
    """Write the sample video and the dubbed speech; return their paths."""
    speech = tts.synthesize(TEXT, voice=voice, rate=150).resampled(16000)
    wav_path = out / "demo_dubbed_de.wav"
    from ..media import write_wav

    write_wav(wav_path, speech.samples, 16000)
    frames = samples.head_motion(samples.portrait(), int(video_seconds * fps), fps, centre=(230.0, 130.0))
    # the source "speaker" says nothing: the mouth movement comes from the dub
    silent = np.zeros(int(video_seconds * 16000), np.float32)
    video_path = samples.write_clip(out / "demo_input.mp4", frames, fps, silent, 16000)
    return video_path, wav_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("out"))
    p.add_argument("--model", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if argv is None:
        from ..quiet import install_native_log_filter

        install_native_log_filter()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    video, wav = build_sample(args.out)
    print(f"sample: {video} + {wav} ({time.perf_counter() - t0:.1f} s)")
    rep = dub_file(
        DubOptions(
            video=video,
            audio=wav,
            output=args.out / "demo.mp4",
            engine=replace(EngineConfig.offline(), model=args.model),
            compare=args.out / "demo_compare.mp4",
            check_locality=True,
        )
    )
    print(f"dubbed video:  {rep.output.resolve()}")
    print(f"side by side:  {(args.out / 'demo_compare.mp4').resolve()}")
    print(
        f"{rep.frames} frames in {rep.wall:.1f} s ({rep.frames_per_second:.1f} frames/s, "
        f"{rep.realtime_factor:.2f}x real time); frames without a face: {rep.no_face}; "
        f"pixels changed outside the mask: {rep.pixels_changed_outside_mask}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
