"""Defaults shared by the commands and the pipeline (a light module: the CLI imports it at start).

``DEFAULT_LOOKAHEAD_MS``: future dubbed audio the lip stage uses. Measured on the dev clips
with the shipped model (``rtdub bench``, lookahead section): the mouth-opening correlation is
flat from 0 to 120 ms (0.59-0.60), but the lips close on /p b m/ less as the lookahead grows
(TTS lip-closure AUC 0.75 / 0.69 / 0.57 / 0.43 at 0 / 40 / 80 / 120 ms): with more future
audio, the mouth opens for the next vowel too early. 40 ms keeps most of the closure and
costs 40 ms of audio wait when the dubbed audio arrives just in time.
"""

from __future__ import annotations

DEFAULT_LOOKAHEAD_MS = 40.0

__all__ = ["DEFAULT_LOOKAHEAD_MS"]
