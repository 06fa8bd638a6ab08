"""The per-frame dubbing core shared by the offline CLI, the streaming engine and benchmarks.

    frame ─► Tracker ─► align ─► crop ─┬─► ReferenceSelector (past frames only)
    mel  ─► AudioStage (units for t, t-4..t history) ─┤
                                        └─► generator ─► Compositor ─► frame (mask only)

The :class:`~rtdub.render.compositor.Compositor` is chosen once, by what the backend can do:
the numpy/OpenCV paste, the CUDA kernel beside a GPU backend, and, with a bundle whose generator
also outputs its fields (flow, mixing weight, colour), hi-res compositing at a render size R > S
from an R px crop of the reference (rtdub/render/hires.py), in the same resampling as the paste,
so the mouth keeps the frame's resolution; R follows the face's size in the frame
(``PipelineConfig.render``). Old bundles, and backends without the fields (TensorRT), render at
S as before.

Every stage is synchronous; callers that live on an event loop run :meth:`DubPipeline.process`
in an executor. A frame without a face is returned unchanged.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import Backend
from ..defaults import DEFAULT_LOOKAHEAD_MS
from ..drive.audio import AudioDriveConfig, AudioStage, MelSource
from ..drive.base import Drive
from ..face import align
from ..face.lipunits import to_canonical
from ..face.tracker import FaceObservation, Tracker
from ..model import ModelBundle
from . import hires
from .blend import FaceMask, PasteRegion, face_mask
from .compositor import Compositor, Render, make_compositor
from .hires import RenderSizeConfig, RenderSizer
from .reference import Candidate, ReferenceConfig, make_selector

logger = logging.getLogger(__name__)

STAGES = ("track", "align", "mel", "a2l", "generator", "blend")


@dataclass(frozen=True)
class PipelineConfig:
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS
    # a frame is silent when the mean log-mel (scale [-4, 4]) of the 50 ms around it stays
    # below this; silent frames get the closed-mouth units
    silence_level: float = -3.0
    colour_match: bool = True
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    render: RenderSizeConfig = field(default_factory=RenderSizeConfig)

    @property
    def drive(self) -> AudioDriveConfig:
        """The audio drive's part of the settings."""
        return AudioDriveConfig(lookahead_ms=self.lookahead_ms, silence_level=self.silence_level)


@dataclass(frozen=True)
class FrameResult:
    image: np.ndarray  # the output frame (the input array, modified in place when a face was found)
    face: bool
    silent: bool
    times: dict[str, float]  # ms per stage
    region: PasteRegion | None = None
    units: np.ndarray | None = None
    render_size: int = 0  # side of the pasted face crop (the bundle's crop size, or R)
    composite_ms: float = 0.0  # part of "blend": the hi-res compositing and paste (one resampling)


@dataclass(frozen=True)
class Shortcuts:
    """The scheduler's degradation steps for one frame (rtdub/stream/scheduler.py)."""

    reuse_landmarks: bool = False  # render with the last frame's landmarks instead of tracking
    skip_generator: bool = False  # paste the last render again at this frame's alignment
    landmarks: FaceObservation | None = None  # render with these landmarks (speculative alignment)


NO_SHORTCUTS = Shortcuts()


class DubPipeline:
    """Stateful per-stream renderer. Feed frames in time order."""

    def __init__(
        self,
        bundle: ModelBundle,
        backend: Backend,
        tracker: Tracker,
        config: PipelineConfig | None = None,
        compositor: Compositor | None = None,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.tracker = tracker
        self.config = config or PipelineConfig()
        self.audio = AudioStage(bundle, backend, self.config.drive)
        self.drive: Drive = self.audio  # what gives each frame's units (set_drive)
        self.refs = make_selector(bundle, self.config.reference)  # an enrolled bundle's bank, or the causal pick
        self.mask: FaceMask = face_mask(bundle.crop_size)
        s = bundle.crop_size
        self._hidden = self.mask.hidden
        self._units: deque[np.ndarray] = deque(maxlen=bundle.context)
        self._pose = np.zeros((1, 3, s, s), np.float32)
        self._ref = np.zeros((1, 3, s, s), np.float32)
        self._ctx = np.zeros((1, bundle.context, bundle.n_units), np.float32)
        self._last_obs: FaceObservation | None = None
        self._units_t: float | None = None  # the frame of the newest units in the context
        self._last_render: Render | None = None  # what a skipped generator pastes again
        cfg = self.config
        self.compositor = compositor or make_compositor(backend, self.mask, cfg.render, cfg.colour_match, bundle.fields)
        self.sizer = RenderSizer(self.config.render, s)
        self._interp = self.config.render.interpolation

    def reset(self) -> None:
        self.audio.reset()
        self.drive.reset()
        self.refs.reset()
        self.tracker.reset()
        self.backend.reset()
        self._units.clear()
        self._units_t = None
        self._last_obs = None
        self._last_render = None
        self.sizer.reset()
        self.compositor.reset()

    def close(self) -> None:
        """Release the backend and the compositor (the tracker belongs to the caller)."""
        self.compositor.close()
        self.backend.close()

    def set_drive(self, drive: Drive | None) -> None:
        """Drive the lips with ``drive`` (e.g. rtdub.drive.phonetic.PhoneticDrive, which falls
        back on ``self.audio``); None goes back to the audio drive."""
        self.drive = self.audio if drive is None else drive

    def push_units(self, units: np.ndarray, t: float | None = None) -> None:
        """Append the units of the frame at ``t`` to the five-frame context; units given again
        for the same frame (a frame rendered twice) replace its earlier ones."""
        if t is not None and t == self._units_t and self._units:
            self._units[-1] = np.asarray(units, np.float32)
            return
        self._units.append(np.asarray(units, np.float32))
        self._units_t = t

    @property
    def last_observation(self) -> FaceObservation | None:
        """The landmarks the last frame was rendered with (what ``reuse_landmarks`` reuses)."""
        return self._last_obs

    def set_observation(self, obs: FaceObservation | None) -> None:
        """Replace the landmarks ``reuse_landmarks`` will reuse (e.g. by the tracked ones)."""
        self._last_obs = obs

    def process(
        self,
        image: np.ndarray,
        t: float,
        mel: MelSource | None = None,
        units: np.ndarray | None = None,
        shortcuts: Shortcuts = NO_SHORTCUTS,
    ) -> FrameResult:
        """Dub the frame ``image`` (RGB uint8, modified in place) shown at ``t`` seconds.

        The units come from ``mel`` through the audio stage, or are given directly (``units``,
        e.g. true units for an evaluation ceiling). ``shortcuts`` are the scheduler's
        degradation steps for this frame."""
        times: dict[str, float] = {}
        silent = False
        if units is None:
            if mel is None:
                raise ValueError("give a mel source or the units")
            units, silent = self.drive.units_at(mel, t, times)
        self.push_units(units, t)
        t0 = time.perf_counter()
        obs = self._observe(image, t, shortcuts)
        t1 = time.perf_counter()
        times["track"] = (t1 - t0) * 1000
        self._last_obs = obs
        if obs is None:
            return FrameResult(image, False, silent, times, None, units)
        s = self.bundle.crop_size
        al = align.estimate(obs.landmarks, s)
        crop = align.warp_to_crop(image, al)
        size = self.sizer.size_for(al) if self.backend.has_fields else s
        big = hires.crop(image, hires.scaled(al, size), self._interp) if size > s and self.refs.wants(t) else None
        self.refs.observe(t, crop, to_canonical(obs.landmarks), big)
        ref = self.refs.reference(t, units)
        t2 = time.perf_counter()
        times["align"] = (t2 - t1) * 1000
        if not (shortcuts.skip_generator and self._last_render is not None):
            assert ref is not None
            self._last_render = self._render(crop, ref, size)
        t3 = time.perf_counter()
        times["generator"] = (t3 - t2) * 1000
        pasted = self.compositor.paste(image, self._last_render, al, crop, size)
        times["blend"] = (time.perf_counter() - t3) * 1000
        return FrameResult(image, True, silent, times, pasted.region, units, pasted.size, pasted.composite_ms)

    def _observe(self, image: np.ndarray, t: float, shortcuts: Shortcuts) -> FaceObservation | None:
        """The landmarks to render ``image`` with: given, reused or tracked."""
        if shortcuts.landmarks is not None:
            return shortcuts.landmarks
        if shortcuts.reuse_landmarks and self._last_obs is not None:
            return self._last_obs
        return self.tracker.track(image, t)

    def _render(self, crop: np.ndarray, ref: Candidate, size: int) -> Render:
        """The generator on this frame's pose, the reference and the unit context."""
        crop_f = crop.astype(np.float32) * (1 / 255)
        self._pose[0] = crop_f.transpose(2, 0, 1)
        self._pose[0][:, self._hidden] = 0.0
        self._ref[0] = ref.crop.transpose(2, 0, 1).astype(np.float32) * (1 / 255)
        hist = list(self._units)
        while len(hist) < self.bundle.context:
            hist.insert(0, hist[0])
        self._ctx[0] = np.stack(hist)
        out, fields = self.backend.generate_fields(self._pose, self._ref, self._ctx)
        face = np.clip(out[0].transpose(1, 2, 0), 0, 1) * 255
        return self.compositor.prepare(face, crop, None if fields is None else fields[0], ref, size)
