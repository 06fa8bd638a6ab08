"""The engine flags, added the same way to every command that runs the engine (``dub``,
``serve``, ``join``, ``camera``), each with the defaults of its preset
(:meth:`EngineConfig.offline` for files, :meth:`EngineConfig.stream` for streams), and read
back into one validated :class:`~rtdub.engine.EngineConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backends import BACKENDS
from ..engine import EngineConfig
from ..model import AUDIO_MODELS
from ..render.hires import KERNELS


def add_engine_options(p: argparse.ArgumentParser, preset: EngineConfig) -> None:
    """--model, --backend, --threads, --audio-model, --lookahead-ms, --render-size, --kernel, --detail and
    --reference-opening, with ``preset``'s values as defaults."""
    g = p.add_argument_group("engine")
    g.add_argument(
        "--model",
        type=Path,
        default=preset.model,
        help="model bundle: a folder, or a shipped bundle by name: default, fast (for loaded hosts), "
        "hq (offline) (default: default)",
    )
    g.add_argument(
        "--backend",
        default=preset.backend,
        metavar="{" + ",".join(BACKENDS) + "}",
        help=f"inference backend: onnx (CPU) or tensorrt (GPU) (default {preset.backend})",
    )
    g.add_argument("--threads", type=int, default=preset.threads, help=f"inference threads (default {preset.threads})")
    g.add_argument(
        "--audio-model",
        choices=AUDIO_MODELS,
        default=preset.audio_model,
        help="lips from the dubbed audio alone: fused (the audio-to-lip model mixed with the bundle's "
        "speaker-independent viseme recogniser, where it has one) or base (the audio-to-lip model alone) "
        f"(default {preset.audio_model})",
    )
    g.add_argument(
        "--lookahead-ms",
        type=float,
        default=preset.lookahead_ms,
        help=f"most future dubbed audio the lip stage uses, 0-120 ms (default {preset.lookahead_ms:g})",
    )
    g.add_argument(
        "--render-size",
        type=int,
        default=preset.render_size,
        help="side in px of the re-rendered face crop: 0 (default) follows the face's size in the frame, "
        "the model's crop size (96) turns high-resolution compositing off",
    )
    g.add_argument(
        "--kernel",
        choices=sorted(KERNELS),
        default=preset.kernel,
        help=f"interpolation of the reference's texture in hi-res compositing (default {preset.kernel})",
    )
    g.add_argument(
        "--detail",
        type=float,
        default=preset.detail,
        metavar="G",
        help="hi-res compositing: how much of the reference's fine detail to keep under the "
        f"synthesised colour, 0..1 (default {preset.detail:g}; 0 = the generator's mix alone, cheaper)",
    )
    g.add_argument(
        "--reference-opening",
        type=float,
        default=preset.reference_opening,
        metavar="Q",
        help="identity reference: the mouth opening to look for, as a quantile of the last 10 s "
        f"(0 = most closed; the default {preset.reference_opening:g} shows the speaker's teeth)",
    )


def engine_config(args: argparse.Namespace, preset: EngineConfig) -> EngineConfig:
    """The engine flags of ``args`` over ``preset``, validated (InputError naming the flag)."""
    config = EngineConfig(
        model=args.model,
        backend=args.backend,
        threads=args.threads,
        pipeline=preset.pipeline,
        audio_model=args.audio_model,
    ).with_options(
        lookahead_ms=args.lookahead_ms,
        render_size=args.render_size,
        kernel=args.kernel,
        detail=args.detail,
        reference_opening=args.reference_opening,
    )
    config.check()
    return config
