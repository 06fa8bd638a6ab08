"""Phone labels for real speech, from pocketsphinx's bundled en-us acoustic model (issue 3).

    python -m training.asr_phones --data data2/train --out data2/asr [--holdout '*feifeili*']

Each prepared clip's audio (training/prepare.py: 16 kHz) is recognised by
training/recogniser.py in two passes: words with the bundled language model and dictionary,
then those words force-aligned to the audio, which gives one ARPAbet phone per 10 ms with
acoustic boundaries. When the words cannot be aligned (no speech, or a hypothesis the aligner
rejects), phone-loop recognition (``allphone``) labels the clip instead. The labels are
recognised, not transcribed: wrong words still get plausible phones, but they are noisy
labels, not ground truth.

The phones are mapped to espeak's mnemonics (``ARPABET``), so the shards are in the format of
training.tts_data's (training/phones.py: ``wav`` int16 16 kHz, ``phone`` per mel frame,
``symbols``) and training.pretrain_a2l can pretrain on them next to the TTS speech (``--tts
DIR``, repeatable), with the same visual phoneme classes and one phoneme vocabulary. Clips
matching ``--holdout`` are skipped: their identity is held out of every training. Shards that
exist are kept (resumable); each is written atomically, and ``OUT/asr.json`` (written last)
lists every labelled clip: its presence means the directory is complete.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
from pathlib import Path

import numpy as np

from .data import load_dir
from .phones import PAUSE, frame_labels, save_shard
from .recogniser import Recogniser

logger = logging.getLogger("training.asr_phones")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="phone labels for prepared clips' audio (pocketsphinx en-us)")
    p.add_argument("--data", type=Path, action="append", required=True, help="prepared shards (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--holdout", default="*feifeili*", help="clips left out (glob; '' keeps all)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for d in args.data:
        if not d.is_dir():
            print(f"asr_phones: error: {d}: not a directory", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rec = Recogniser()
    summary_path = args.out / "asr.json"
    summary: dict[str, dict[str, object]] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    done = 0
    for d in args.data:
        for clip in load_dir(d):
            if not clip.has_audio or (args.holdout and fnmatch.fnmatch(clip.name, args.holdout)):
                continue
            path = args.out / f"asr_{clip.name}.npz"
            if path.exists():
                summary.setdefault(path.name, {"clip": clip.name})  # labelled by an earlier run
                continue
            segs, how = rec.phones(clip.wav)
            symbols = {PAUSE: 0}
            phone = frame_labels([(s.phone, s.start, s.end) for s in segs], len(clip.mel), symbols)
            save_shard(path, clip.wav, phone, symbols, "asr")
            speech = float(np.mean(phone != 0)) if len(phone) else 0.0
            logger.info("%s: %d phones (%s), %.0f%% of frames speech", clip.name, len(segs), how, 100 * speech)
            summary[path.name] = {"clip": clip.name, "phones": len(segs), "method": how, "speech": speech}
            done += 1
    tmp = summary_path.with_name(summary_path.name + ".part")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(summary_path)
    print(f"labelled {done} clips into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
