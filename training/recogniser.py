"""Phone recognition of real speech: pocketsphinx's bundled en-us acoustic model.

Each utterance is recognised in two passes: words with the bundled language model and
dictionary, then those words force-aligned to the audio, which gives one ARPAbet phone per
10 ms with acoustic boundaries. When the words cannot be aligned (no speech, or a hypothesis
the aligner rejects), phone-loop recognition (``allphone``) labels it instead. The phones
are mapped to espeak's mnemonics (``ARPABET``), the vocabulary of training/phones.py, so
their visual classes are those of the TTS speech. Used by training.asr_phones (shards of
labelled real speech) and training.offset_check ``--asr`` (phones that time a clip's audio).
"""

from __future__ import annotations

import logging

import numpy as np

from rtdub import audio

from .phones import PAUSE, PhoneSegment

logger = logging.getLogger("training.asr_phones")  # the name it logged under before the move

FRAME_S = 0.01  # pocketsphinx's frame: 100 per second
# CMU's 39 phones to the espeak en mnemonics of the same sounds. The bundled model and
# dictionary carry no stress, so AH (ʌ stressed, ə unstressed) is taken as the more frequent ə.
ARPABET: dict[str, str] = {
    "AA": "A:", "AE": "a", "AH": "@", "AO": "O:", "AW": "aU", "AY": "aI", "B": "b", "CH": "tS", "D": "d",
    "DH": "D", "EH": "E", "ER": "3:", "EY": "eI", "F": "f", "G": "g", "HH": "h", "IH": "I", "IY": "i:",
    "JH": "dZ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "N", "OW": "oU", "OY": "OI", "P": "p", "R": "r",
    "S": "s", "SH": "S", "T": "t", "TH": "T", "UH": "U", "UW": "u:", "V": "v", "W": "w", "Y": "j", "Z": "z",
    "ZH": "Z",
}  # fmt: skip


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
        return self._loop(pcm), "allphone"

    def phone_loop(self, wav: np.ndarray) -> list[PhoneSegment]:
        """Phone segments of 16 kHz float ``wav`` by phone-loop recognition alone (no words)."""
        return self._loop((np.clip(np.asarray(wav, np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes())

    def _loop(self, pcm: bytes) -> list[PhoneSegment]:
        self._decode(self._phones, pcm)
        return [
            PhoneSegment(espeak_symbol(s.word), s.start_frame * FRAME_S, (s.end_frame + 1) * FRAME_S)
            for s in self._phones.seg()
        ]
