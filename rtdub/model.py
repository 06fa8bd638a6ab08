"""A model bundle: the two ONNX stages plus the manifest that says how to feed them.

Layout of a bundle directory (``engines/default`` is the one shipped):

    manifest.json    format, crop size, unit basis, closed-mouth units, window sizes
    phonetic.json    (optional) the phonetic drive: timed visual phoneme classes -> units
    references/      (optional, an enrolled bundle: rtdub enroll) the person's identity
                     references, each an S px PNG and a larger one of the same region, listed
                     in the manifest's ``references`` with their mouth opening
    a2l.onnx         mel (B, W, 80), lookahead (B, 1) seconds  -> units (B, U)
    generator.onnx   pose (B, 3, S, S), reference (B, 3, S, S), units (B, 5, U) -> face (B, 3, S, S)
                     and, in bundles exported since the hi-res compositing, fields (B, 6, S, S):
                     flow (2, grid units), mixing weight (1), colour (3), in the order the
                     manifest's generator.fields.channels gives (FieldLayout); see rtdub/render/hires.py

Images are RGB floats in [0, 1]. Only ONNX, JSON and PNG are read: nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import ModelError
from .face import align
from .face.lipunits import LipBasis

FORMAT = "rtdub-model/1"
# the source tree: rtdub/ beside engines/ (the bundles) and .git
SOURCE_ROOT = Path(__file__).resolve().parent.parent
# the shipped bundles (default, fast, hq) and the lip-sync expert (syncnet): an installed
# package carries copies in rtdub/_engines (setup.py puts them there); a source tree and an
# editable install read engines/ in place, where the training and export scripts write
PACKAGED_ENGINES_DIR = Path(__file__).resolve().parent / "_engines"
ENGINES_DIR = PACKAGED_ENGINES_DIR if PACKAGED_ENGINES_DIR.is_dir() else SOURCE_ROOT / "engines"
DEFAULT_MODEL_DIR = ENGINES_DIR / "default"
# the model bundles that ship with rtdub, which ``--model`` also takes by name
SHIPPED_BUNDLES = ("default", "fast", "hq")
# the audio drives a bundle may hold: "fused" (the audio-to-lip model mixed with the viseme
# recogniser, where the bundle has it) and "base" (the audio-to-lip model alone)
AUDIO_MODELS = ("fused", "base")


# the channels of the generator's fields output, in order: what every bundle exported since
# the hi-res compositing declares (manifest generator.fields.channels), and the layout the
# training code builds the generator head with (training/models.py)
FIELD_CHANNELS = ("flow_x", "flow_y", "alpha", "red", "green", "blue")


@dataclass(frozen=True)
class FieldLayout:
    """Where each part of the generator's fields lies: the one runtime reading of the
    manifest's ``generator.fields.channels`` (rtdub/render/hires.py uses it)."""

    channels: tuple[str, ...] = FIELD_CHANNELS

    def __post_init__(self) -> None:
        missing = set(FIELD_CHANNELS) - set(self.channels)
        if missing or len(set(self.channels)) != len(self.channels):
            raise ValueError(f"fields need each of {FIELD_CHANNELS} once, got {self.channels}")

    def index(self, name: str) -> int:
        return self.channels.index(name)

    @property
    def count(self) -> int:
        return len(self.channels)

    @property
    def alpha(self) -> int:
        """The mixing weight's channel (1 = the warped reference)."""
        return self.index("alpha")

    @property
    def sampled(self) -> tuple[int, int, int]:
        """flow x, flow y and the mixing weight: resampled together into the frame."""
        return self.index("flow_x"), self.index("flow_y"), self.alpha

    @property
    def colour(self) -> tuple[int, int, int]:
        """The synthesised colour, red, green, blue."""
        return self.index("red"), self.index("green"), self.index("blue")

    @classmethod
    def from_manifest(cls, generator: dict[str, object]) -> FieldLayout:
        """The layout a manifest's ``generator`` entry declares; bundles older than the
        declaration used :data:`FIELD_CHANNELS`."""
        spec = generator.get("fields")
        if not isinstance(spec, dict) or "channels" not in spec:
            return cls()
        return cls(tuple(str(c) for c in spec["channels"]))


@dataclass(frozen=True)
class BankReference:
    """One identity reference of an enrolled bundle (manifest ``references``): the person's own
    face crop, at the bundle's crop size and larger, and how open its mouth is, in the
    person's z-scored units (the last unit, the inner-lip gap)."""

    name: str
    crop_path: Path  # S x S PNG, RGB
    hires_path: Path | None  # R x R PNG of the same region (R >= S), for hi-res compositing
    gap: float  # z-scored inner-lip gap on the person's own statistics
    yaw: float  # |nose tip x - frontal|, canonical units

    @staticmethod
    def from_manifest(root: Path, entry: dict[str, Any]) -> BankReference:
        """The entry's files must lie inside the bundle (ValueError otherwise)."""

        def inside(name: object) -> Path:
            path = root / str(name)
            if not path.resolve().is_relative_to(root.resolve()):
                raise ValueError(f"reference file {name!r} lies outside the bundle")
            return path

        hires = entry.get("hires")
        return BankReference(
            name=str(entry["name"]),
            crop_path=inside(entry["file"]),
            hires_path=inside(hires) if hires else None,
            gap=float(entry["gap"]),
            yaw=float(entry.get("yaw", 0.0)),
        )


@dataclass(frozen=True)
class ModelBundle:
    root: Path
    crop_size: int
    mel_window: int
    context: int
    max_lookahead: float
    basis: LipBasis
    closed_units: np.ndarray  # (U,) z-scored units of a closed, neutral mouth
    smoothing: tuple[float, ...]  # causal weights over a2l outputs of frames t-k..t
    a2l_path: Path
    generator_path: Path
    info: dict[str, object]
    fields: FieldLayout = FieldLayout()  # the generator's fields output, when it has one
    phonetic_path: Path | None = None  # the phonetic drive's model (rtdub/drive/phonetic.py), if any
    references: tuple[BankReference, ...] = ()  # an enrolled person's references (rtdub/render/reference.py)
    # the audio-to-lip model alone, where ``a2l_path`` is the fused audio drive (the same model
    # mixed with the viseme recogniser: training/train_visemes.py); manifest ``a2l.baseline``
    a2l_baseline_path: Path | None = None

    @property
    def n_units(self) -> int:
        return self.basis.n_units

    def audio_model(self, name: str) -> ModelBundle:
        """The bundle with the audio drive ``name`` (:data:`AUDIO_MODELS`): "fused" is the
        bundle's own a2l file; "base" is its audio-to-lip model alone (the same file for a
        bundle that has no fused drive)."""
        if name not in AUDIO_MODELS:
            raise ValueError(f"audio model must be one of {AUDIO_MODELS}, got {name!r}")
        if name == "base" and self.a2l_baseline_path is not None:
            return replace(self, a2l_path=self.a2l_baseline_path, a2l_baseline_path=None)
        return self

    @property
    def fused(self) -> bool:
        """Whether the audio drive mixes in the viseme recogniser."""
        return self.a2l_baseline_path is not None


def geometry() -> dict[str, object]:
    """The crop geometry this runtime aligns faces with; a bundle trained on other crops
    would be fed misplaced faces, so bundles record it and loading checks it."""
    return {"crop_center": list(align.CROP_CENTER), "crop_side": align.CROP_SIDE, "template": "mediapipe-468/v1"}


def default_model_dir() -> Path:
    return DEFAULT_MODEL_DIR


def bundle_dir(path: str | Path | None = None) -> Path:
    """The folder of a model bundle: ``path`` itself, the shipped default for None, or the
    shipped bundle of that name for one of :data:`SHIPPED_BUNDLES` that is no folder here
    (so ``--model fast`` works wherever rtdub is installed)."""
    if path is None:
        return DEFAULT_MODEL_DIR
    root = Path(path)
    if str(path) in SHIPPED_BUNDLES and not root.is_dir():
        return ENGINES_DIR / str(path)
    return root


def load_bundle(path: str | Path | None = None) -> ModelBundle:
    root = bundle_dir(path)
    mf = root / "manifest.json"
    if not mf.is_file():
        names = ", ".join(SHIPPED_BUNDLES)
        raise ModelError(
            f"{root}: not a model bundle (no manifest.json; give a bundle folder or a shipped name: {names})"
        )
    try:
        m = json.loads(mf.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{mf}: unreadable manifest ({exc})") from exc
    if m.get("format") != FORMAT:
        raise ModelError(f"{mf}: unsupported format {m.get('format')!r}, expected {FORMAT!r}")
    try:
        basis = LipBasis(
            np.asarray(m["units"]["basis_mean"], np.float32),
            np.asarray(m["units"]["basis_components"], np.float32),
        )
        bundle = ModelBundle(
            root=root,
            crop_size=int(m["crop_size"]),
            mel_window=int(m["a2l"]["window"]),
            context=int(m["generator"]["context"]),
            max_lookahead=float(m["a2l"]["max_lookahead"]),
            basis=basis,
            closed_units=np.asarray(m["units"]["closed"], np.float32),
            smoothing=tuple(float(x) for x in m["units"].get("smoothing", [1.0])),
            a2l_path=root / m["a2l"]["file"],
            generator_path=root / m["generator"]["file"],
            info=m,
            fields=FieldLayout.from_manifest(m["generator"]),
            phonetic_path=root / m["phonetic"]["file"] if isinstance(m.get("phonetic"), dict) else None,
            references=tuple(BankReference.from_manifest(root, r) for r in m.get("references", [])),
            a2l_baseline_path=root / m["a2l"]["baseline"] if m["a2l"].get("baseline") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{mf}: malformed manifest ({exc!r})") from exc
    geo = m.get("geometry")
    if geo != geometry():
        raise ModelError(f"{mf}: crop geometry {geo} differs from this runtime's {geometry()}")
    bank = [p for r in bundle.references for p in (r.crop_path, r.hires_path) if p is not None]
    optional = [p for p in (bundle.phonetic_path, bundle.a2l_baseline_path) if p is not None]
    for p in (bundle.a2l_path, bundle.generator_path, *optional, *bank):
        if not p.is_file():
            raise ModelError(f"{p}: missing model file")
    if bundle.closed_units.shape != (basis.n_units,):
        raise ModelError(f"{mf}: closed units do not match the unit basis")
    return bundle
