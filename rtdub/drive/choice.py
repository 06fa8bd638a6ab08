"""Which drive moves the lips of a dub, from what the user gives beside the dubbed audio:

    nothing                       ─► the audio drive (rtdub/drive/audio.py)
    --phonemes FILE               ─► the phonetic drive over the file's events (rtdub/drive/events.py)
    --text "..." --language CODE  ─► the phonetic drive over the text aligned to the audio
                                     (rtdub/drive/textalign.py)

A frame the events do not reach (a file shorter than the audio, a text that could not be
aligned there) takes the audio drive, faded in and out over a few frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import InputError
from ..model import ModelBundle
from .base import Drive
from .events import load_phonemes
from .phonetic import PhoneticDrive, bundle_drive

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriveSpec:
    phonemes: Path | None = None  # a phoneme or viseme file (Polly, Azure, rtdub JSON)
    text: str | None = None  # the dubbed speech's text, aligned to the audio
    language: str | None = None  # the text's language (an espeak-ng voice or language code)

    @property
    def name(self) -> str:
        return "phonemes" if self.phonemes is not None else "text" if self.text is not None else "audio"

    def check(self) -> None:
        """Usage errors, before any work: both inputs at once, or half of the text input."""
        if self.phonemes is not None and self.text is not None:
            raise InputError("--phonemes", "give --phonemes or --text, not both")
        if self.text is not None and not self.text.strip():
            raise InputError("--text", "is empty")
        if self.text is not None and not self.language:
            raise InputError("--language", "is required with --text (an espeak-ng language code, e.g. es)")
        if self.language is not None and self.text is None:
            raise InputError("--language", "goes with --text")
        if self.phonemes is not None and not self.phonemes.is_file():
            raise InputError(str(self.phonemes), "no such file")


def make_drive(
    spec: DriveSpec, bundle: ModelBundle, fallback: Drive, samples: np.ndarray, sample_rate: int
) -> PhoneticDrive | None:
    """The drive ``spec`` asks for over the dubbed audio ``samples`` (None: the audio drive)."""
    spec.check()
    duration = len(samples) / sample_rate
    if spec.phonemes is not None:
        tl = load_phonemes(spec.phonemes, duration)
    elif spec.text is not None:
        from .textalign import align_text

        assert spec.language is not None
        aligned = align_text(spec.text, spec.language, samples, sample_rate)
        if not aligned.ok:
            logger.warning(
                "the text could not be aligned to the dubbed audio (cost %.3f): lips from the audio alone",
                aligned.cost,
                extra={"cost": aligned.cost},
            )
            return None
        tl = aligned.timeline
    else:
        return None
    # an aligned text's timeline holds only the spans the alignment trusts: between them, the audio
    drive = bundle_drive(bundle, tl, fallback, samples, sample_rate, gaps_fall_back=spec.text is not None)
    logger.info(
        "lips from %s: %d events over %.2f of %.2f s (%d symbols mapped by the fallback rule)",
        spec.name, len(tl.starts), tl.span[1] - tl.span[0], duration, tl.mapped,
        extra={"events": len(tl.starts), "mapped": tl.mapped, "source": tl.source},
    )  # fmt: skip
    return drive
