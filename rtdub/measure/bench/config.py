"""What one ``rtdub bench`` run measures: :class:`BenchConfig`, the full configuration and the
``--quick`` preset.

The configuration is written whole into ``bench.json`` (``config``), so a figure can always be
traced to the frame counts, resolutions, backends, clips and lookaheads it was measured with.
The real-media defaults (``clips``, ``dub_audio``) come from ``$RTDUB_MEDIA``
(:func:`rtdub.defaults.media_path`) when the config is built, never from an assumed folder: with
neither the variable nor a flag they are None and the sections that need them say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...defaults import DEFAULT_LOOKAHEAD_MS, media_path

SECTIONS = ("stage_latency", "throughput", "lookahead", "quality", "streaming")
ALL_BACKENDS = ("onnx", "tensorrt")


def default_clips() -> Path | None:
    """``$RTDUB_MEDIA/clips``: the real talking-head clips of throughput, lookahead and quality."""
    return media_path("clips")


def default_dub_audio() -> Path | None:
    """``$RTDUB_MEDIA/audio/french.wav``: the foreign speech of the shared-clip throughput run."""
    return media_path("audio", "french.wav")


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a run; the defaults are the full bench (``make bench``)."""

    out: Path = Path("benchmarks/results")
    quick: bool = False
    frames: int = 500  # measured frames per latency run, after warm-up
    warmup: int = 25
    resolutions: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720))
    backends: tuple[str, ...] = ALL_BACKENDS
    threads: int = 2
    model: Path | None = None
    expert: Path | None = None  # lip-sync expert bundle; None: engines/syncnet (null LSE when absent)
    clips: Path | None = field(default_factory=default_clips)  # None: no shared clips (skipped, with a note)
    clip_frames: int | None = None  # cap per clip for lookahead/quality (None: whole clip)
    dub_audio: Path | None = field(default_factory=default_dub_audio)  # None: no shared-clip throughput run
    shared_throughput: bool = True  # also dub the first clip with ``dub_audio``
    lookaheads_ms: tuple[float, ...] = (0.0, 40.0, 80.0, 120.0)
    quality_lookahead_ms: float = DEFAULT_LOOKAHEAD_MS  # the default of ``rtdub dub``
    closure_text: str | None = None  # TTS sentence of the lip-closure test; None: the protocol's
    streaming_seconds: float = 30.0  # length of the loopback streaming run
    sections: tuple[str, ...] = SECTIONS
    notes: tuple[str, ...] = ()

    @staticmethod
    def quick_mode(**overrides: Any) -> BenchConfig:
        """The ``--quick`` configuration: about 3 minutes on 2 cores."""
        base: dict[str, Any] = {
            "quick": True,
            "frames": 200,
            "warmup": 20,
            "resolutions": ((640, 480),),
            "clip_frames": 75,
            "shared_throughput": False,
            "streaming_seconds": 12.0,
        }
        base.update(overrides)
        res = ", ".join(f"{w}x{h}" for w, h in base.get("resolutions", ()))
        note = (
            f"--quick: {base['frames']} measured frames per latency run (full: 500), {res or 'no resolution'} "
            f"only, the first {base['clip_frames']} frames of each clip for lookahead and quality, no "
            f"shared-clip throughput run, a {base['streaming_seconds']:g} s streaming run (full: 30 s)"
        )
        base["notes"] = (note, *base.get("notes", ()))
        return BenchConfig(**base)
