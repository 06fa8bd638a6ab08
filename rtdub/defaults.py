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
"""

from __future__ import annotations

DEFAULT_LOOKAHEAD_MS = 40.0
DEFAULT_DETAIL = 1.0
STREAM_DETAIL = 0.0

__all__ = ["DEFAULT_DETAIL", "DEFAULT_LOOKAHEAD_MS", "STREAM_DETAIL"]
