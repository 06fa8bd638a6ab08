"""Phone labels for real speech, from pocketsphinx's bundled en-us acoustic model (issue 3).

    python -m training.asr_phones --data data2/train --out data2/asr [--holdout '*feifeili*']

Each prepared clip's audio (training/prepare.py: 16 kHz) is recognised in two passes: words
with the bundled language model and dictionary, then those words force-aligned to the audio,
which gives one ARPAbet phone per 10 ms with acoustic boundaries. When the words cannot be
aligned (no speech, or a hypothesis the aligner rejects), phone-loop recognition (``allphone``)
labels the clip instead. The labels are recognised, not transcribed: wrong words still get
plausible phones, but they are noisy labels, not ground truth.

The phones are mapped to espeak's mnemonics (``ARPABET``), so the shards are in the TTS format
of training.tts_data (``wav`` int16 16 kHz, ``phone`` per mel frame, ``symbols``) and
training.pretrain_a2l can pretrain on them next to the TTS speech (``--tts DIR``, repeatable),
with the same visual phoneme classes and one phoneme vocabulary. Clips matching ``--holdout``
are skipped: their identity is held out of every training. Shards that exist are kept
(resumable); each is written atomically, and ``OUT/asr.json`` (written last) lists every
labelled clip: its presence means the directory is complete.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdub import audio

from .data import load_dir
from .tts_data import frame_labels, save_shard

logger = logging.getLogger("training.asr_phones")

FRAME_S = 0.01  # pocketsphinx's frame: 100 per second
PAUSE = "_"  # espeak's pause mnemonic: index 0 of tts_data.frame_labels, visual class 0
# CMU's 39 phones to the espeak en mnemonics of the same sounds. The bundled model and
# dictionary carry no stress, so AH (ʌ stressed, ə unstressed) is taken as the more frequent ə.
ARPABET: dict[str, str] = {
    "AA": "A:", "AE": "a", "AH": "@", "AO": "O:", "AW": "aU", "AY": "aI", "B": "b", "CH": "tS", "D": "d",
    "DH": "D", "EH": "E", "ER": "3:", "EY": "eI", "F": "f", "G": "g", "HH": "h", "IH": "I", "IY": "i:",
    "JH": "dZ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "N", "OW": "oU", "OY": "OI", "P": "p", "R": "r",
    "S": "s", "SH": "S", "T": "t", "TH": "T", "UH": "U", "UW": "u:", "V": "v", "W": "w", "Y": "j", "Z": "z",
    "ZH": "Z",
}  # fmt: skip


@dataclass(frozen=True)
class PhoneSegment:
    phone: str  # espeak mnemonic; PAUSE for silence and noise
    start: float  # seconds
    end: float


def espeak_symbol(arpabet: str) -> str:
    """The espeak mnemonic of a pocketsphinx phone (stress digits dropped); anything that is
    not one of the 39 phones (SIL, +NSN+, +SPN+, ...) is a pause."""
    return ARPABET.get(arpabet.rstrip("012").upper(), PAUSE)


class Recogniser:
    """pocketsphinx's en-us model: word recognition + forced alignment, allphone fallback."""

    def __init__(self) -> None:
        import os

        from pocketsphinx import Decoder, get_model_path

        root = get_model_path()
        self._hmm = os.path.join(root, "en-us", "en-us")
        self._words = Decoder(
            hmm=self._hmm,
            lm=os.path.join(root, "en-us", "en-us.lm.bin"),
            dict=os.path.join(root, "en-us", "cmudict-en-us.dict"),
            samprate=audio.SAMPLE_RATE,
            loglevel="ERROR",
        )
        # phone-loop recognition, with the beams CMU recommends for it
        self._phones = Decoder(
            hmm=self._hmm,
            allphone=os.path.join(root, "en-us", "en-us-phone.lm.bin"),
            lw=2.0,
            beam=1e-20,
            pbeam=1e-20,
            samprate=audio.SAMPLE_RATE,
            loglevel="ERROR",
        )

    @staticmethod
    def _decode(decoder: object, pcm: bytes) -> None:
        decoder.start_utt()  # type: ignore[attr-defined]
        decoder.process_raw(pcm, full_utt=True)  # type: ignore[attr-defined]
        decoder.end_utt()  # type: ignore[attr-defined]

    def phones(self, wav: np.ndarray) -> tuple[list[PhoneSegment], str]:
        """Phone segments of 16 kHz float ``wav`` and how they were found ("aligned" words or
        "allphone")."""
        pcm = (np.clip(np.asarray(wav, np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()
        d = self._words
        self._decode(d, pcm)
        hyp = d.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if text:
            try:
                d.set_align_text(text)
                self._decode(d, pcm)
                d.set_alignment()
                self._decode(d, pcm)
                al = d.get_alignment()
                segs = [
                    PhoneSegment(espeak_symbol(p.name), p.start * FRAME_S, (p.start + p.duration) * FRAME_S)
                    for w in al
                    for p in w
                ]
                if segs:
                    return segs, "aligned"
            except RuntimeError as e:  # the aligner rejects the hypothesis
                logger.info("alignment failed (%s); phone loop instead", e)
            finally:
                d.activate_search()
        self._decode(self._phones, pcm)
        segs = [
            PhoneSegment(espeak_symbol(s.word), s.start_frame * FRAME_S, (s.end_frame + 1) * FRAME_S)
            for s in self._phones.seg()
        ]
        return segs, "allphone"


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
