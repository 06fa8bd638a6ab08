"""The engine configuration: which model, on which backend, with how many threads, and how the
pipeline renders. One definition for every command and both engines.

    EngineConfig.offline()  ─► DubOptions.engine  ─► dub_file ─┐
    EngineConfig.stream()   ─► StreamConfig.engine ─► session ──┼─► build_pipeline(config, tracker)
    cli/options.py (the engine flags of every command) ─────────┘        = bundle + backend + DubPipeline

The two presets differ only where the frame deadline matters: a stream uses one inference
thread, the bicubic kernel and no fine-detail term (docs/design.md and rtdub/defaults.py say
what each costs); a file uses two threads, Lanczos and the full detail. :meth:`EngineConfig.check`
is the one place the values are validated; its errors name the command-line flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from .backends import BACKEND_NAMES, BACKENDS, Backend, BackendConfig, get_backend
from .defaults import DEFAULT_DETAIL, DEFAULT_LOOKAHEAD_MS, STREAM_DETAIL
from .exceptions import InputError
from .face.tracker import Tracker
from .model import AUDIO_MODELS, ModelBundle, load_bundle
from .render.hires import KERNELS, RenderSizeConfig, detail_problem, render_size_problem
from .render.pipeline import DubPipeline, PipelineConfig


@dataclass(frozen=True)
class EngineConfig:
    model: Path | None = None  # a model bundle directory; None: the bundled default
    backend: str = "onnx"  # one of rtdub.backends.BACKENDS
    threads: int = 2  # inference threads (per stream when streaming)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    audio_model: str = "fused"  # rtdub.model.AUDIO_MODELS: the bundle's fused audio drive, or "base"

    @classmethod
    def offline(cls) -> EngineConfig:
        """Files: two threads, Lanczos, the reference's full fine detail."""
        return cls._preset(threads=2, kernel="lanczos", detail=DEFAULT_DETAIL)

    @classmethod
    def stream(cls) -> EngineConfig:
        """Streams: one thread per stream, bicubic, no fine-detail term (the frame deadline)."""
        return cls._preset(threads=1, kernel="cubic", detail=STREAM_DETAIL)

    @classmethod
    def _preset(cls, threads: int, kernel: str, detail: float) -> EngineConfig:
        render = RenderSizeConfig(kernel=kernel, detail=detail)
        return cls(threads=threads, pipeline=PipelineConfig(lookahead_ms=DEFAULT_LOOKAHEAD_MS, render=render))

    # --- the pipeline's settings, by the names the commands use ---------------------------

    @property
    def lookahead_ms(self) -> float:
        return self.pipeline.lookahead_ms

    @property
    def render_size(self) -> int:
        return self.pipeline.render.size

    @property
    def kernel(self) -> str:
        return self.pipeline.render.kernel

    @property
    def detail(self) -> float:
        return self.pipeline.render.detail

    @property
    def reference_opening(self) -> float:
        return self.pipeline.reference.open_quantile

    def with_options(
        self,
        *,
        lookahead_ms: float | None = None,
        render_size: int | None = None,
        kernel: str | None = None,
        detail: float | None = None,
        reference_opening: float | None = None,
    ) -> EngineConfig:
        """A copy with the given pipeline settings changed (None: unchanged); an invalid one
        raises :class:`InputError` naming its flag."""
        la = self.lookahead_ms if lookahead_ms is None else lookahead_ms
        size = self.render_size if render_size is None else render_size
        kern = self.kernel if kernel is None else kernel
        det = self.detail if detail is None else detail
        q = self.reference_opening if reference_opening is None else reference_opening
        check_pipeline_settings(la, size, kern, det, q)
        p = self.pipeline
        render = replace(p.render, size=size, kernel=kern, detail=det)
        ref = replace(p.reference, open_quantile=q)
        return replace(self, pipeline=replace(p, lookahead_ms=la, render=render, reference=ref))

    def check(self, crop_size: int | None = None) -> None:
        """Raise :class:`InputError` (naming the flag) for the first invalid setting; with the
        bundle's ``crop_size``, the render size is checked against it too."""
        if self.backend not in BACKEND_NAMES:
            raise InputError("--backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise InputError("--threads", f"must be a whole number >= 1, got {self.threads!r}")
        if self.audio_model not in AUDIO_MODELS:
            raise InputError("--audio-model", f"must be one of {', '.join(AUDIO_MODELS)}, got {self.audio_model!r}")
        check_pipeline_settings(
            self.lookahead_ms, self.render_size, self.kernel, self.detail, self.reference_opening, crop_size
        )

    def load_bundle(self) -> ModelBundle:
        """The model bundle (with the chosen audio drive), the settings checked against it."""
        bundle = load_bundle(self.model)
        self.check(bundle.crop_size)
        return bundle.audio_model(self.audio_model)


def check_pipeline_settings(
    lookahead_ms: float,
    render_size: int,
    kernel: str,
    detail: float,
    reference_opening: float,
    crop_size: int | None = None,
) -> None:
    """The pipeline settings as the commands take them; InputError naming the first bad flag."""
    if not math.isfinite(lookahead_ms) or lookahead_ms < 0:
        raise InputError("--lookahead-ms", f"must be a finite number >= 0, got {lookahead_ms!r}")
    if render_size < 0:
        raise InputError("--render-size", "must be 0 (automatic) or a size in pixels")
    if crop_size is not None:
        problem = render_size_problem(render_size, crop_size)
        if problem is not None:
            raise InputError("--render-size", problem)
    if kernel not in KERNELS:
        raise InputError("--kernel", f"must be one of {', '.join(sorted(KERNELS))}, got {kernel!r}")
    problem = detail_problem(detail)
    if problem is not None:
        raise InputError("--detail", problem)
    if not (math.isfinite(reference_opening) and 0.0 <= reference_opening <= 1.0):
        raise InputError("--reference-opening", f"must be between 0 and 1, got {reference_opening!r}")


def build_pipeline(
    config: EngineConfig, tracker: Tracker, bundle: ModelBundle | None = None, backend: Backend | None = None
) -> DubPipeline:
    """A pipeline for one stream or file: the bundle (loaded unless given), a backend of its
    own (or ``backend``, e.g. an evaluation's wrapped one, which then stays the caller's), and
    ``tracker`` (which stays the caller's to close). ``DubPipeline.close`` releases the
    backend."""
    if bundle is None:
        bundle = config.load_bundle()
    else:
        config.check(bundle.crop_size)
        bundle = bundle.audio_model(config.audio_model)
    if backend is None:
        backend = get_backend(config.backend, bundle, BackendConfig(threads=config.threads))
    return DubPipeline(bundle, backend, tracker, config.pipeline)


__all__ = ["EngineConfig", "build_pipeline"]
