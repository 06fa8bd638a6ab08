"""Defaults shared by the commands and the pipeline (a light module: the CLI imports it at start).

``DEFAULT_LOOKAHEAD_MS``: future dubbed audio the lip stage uses. Measured on the dev clips
with the shipped model (``rtdub bench``, lookahead section): the mouth-opening correlation is
flat from 0 to 120 ms (0.59-0.60), but the lips close on /p b m/ less as the lookahead grows
(TTS lip-closure AUC 0.75 / 0.69 / 0.57 / 0.43 at 0 / 40 / 80 / 120 ms): with more future
audio, the mouth opens for the next vowel too early. 40 ms keeps most of the closure and
costs 40 ms of audio wait when the dubbed audio arrives just in time.

``DEFAULT_DETAIL`` / ``STREAM_DETAIL``: the reference's fine detail kept under the generator's
colour in hi-res compositing (rtdub/render/hires.py). Offline it raises the dev clips' mouth
sharpness from 0.61 to 0.74 (training/ABLATION.md); streams leave it off by default: in the
loopback benchmark it added 2-3 ms to the frame at p50 and put the base-20 default's p95 at
the 40 ms target (39.7-41.0 ms against 25.9-36.2 without it, quiet host).

``MEDIA_ENV``: the folder of real talking-head media (``clips/``, ``audio/``, ``train/``,
``faces/``) that the measuring tools (bench, evaluate, benchmarks/) read by default. It comes
from the ``RTDUB_MEDIA`` environment variable (the Makefile sets it for ``make bench`` and
``make eval``) or from each tool's flags; no tool assumes where it lies.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_LOOKAHEAD_MS = 40.0
DEFAULT_DETAIL = 1.0
STREAM_DETAIL = 0.0
MEDIA_ENV = "RTDUB_MEDIA"


def media_path(*parts: str) -> Path | None:
    """``$RTDUB_MEDIA/parts...``, or None when the variable is unset or empty."""
    root = os.environ.get(MEDIA_ENV, "").strip()
    return Path(root, *parts) if root else None

__all__ = ["DEFAULT_DETAIL", "DEFAULT_LOOKAHEAD_MS", "MEDIA_ENV", "STREAM_DETAIL", "media_path"]
