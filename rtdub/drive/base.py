"""What every drive gives the pipeline: lip-motion units for the frame shown at ``t``.

The pipeline (rtdub/render/pipeline.py) and the stream's scheduler ask ``DubPipeline.drive``
for each frame's units; the audio drive (rtdub/drive/audio.py) is the default and the fallback
of the others.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .audio import MelSource


class Drive(Protocol):
    def units_at(
        self,
        mel: MelSource,
        t: float,
        times: dict[str, float] | None = None,
        lookahead: float | None = None,
    ) -> tuple[np.ndarray, bool]:
        """Smoothed z-units for the frame at ``t`` and whether it is silent there. ``mel`` is the
        dubbed audio's log-mel (the audio drive's input, every drive's fallback); ``lookahead``
        (s) caps the future audio used for this frame; ``times`` gets per-stage milliseconds."""
        ...

    def reset(self) -> None: ...
