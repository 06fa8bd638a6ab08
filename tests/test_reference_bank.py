"""An enrolled bundle's reference bank (rtdub/render/reference.py, BankSelector): chosen by the
target units' opening from the first frame on, steady between re-picks, used by the pipeline in
place of the causal pick, colour still matched to the live frame. Torch-free: the bundle is the
shipped one plus generated reference crops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub.backends import get_backend
from rtdub.backends.base import Backend
from rtdub.exceptions import ModelError
from rtdub.face import align
from rtdub.face.tracker import FaceTracker
from rtdub.measure import samples
from rtdub.model import DEFAULT_MODEL_DIR, load_bundle
from rtdub.render import hires
from rtdub.render.pipeline import DubPipeline, PipelineConfig
from rtdub.render.reference import BankSelector, Candidate, ReferenceConfig, ReferenceSelector, make_selector

from .test_reference_units import face


def _cand(k: int, gap: float) -> Candidate:
    return Candidate(-1.0 - k, gap, 0.0, np.full((4, 4, 3), k, np.uint8))


def _units(gap: float) -> np.ndarray:
    u = np.zeros(9, np.float32)
    u[-1] = gap
    return u


BANK = (_cand(0, -1.5), _cand(1, 0.3), _cand(2, 1.2))


def test_the_bank_follows_the_target_opening_with_hysteresis() -> None:
    sel = BankSelector(BANK, ReferenceConfig(refresh=0.5))
    assert not sel.wants(0.0)
    first = sel.reference(0.0, _units(-1.4))
    assert first is BANK[0]  # from the very first frame: no stream frame needed
    picks = []
    for i in range(1, 200):  # 8 s: 2 s closed, 3 s half open, 3 s wide open
        t = i / 25
        gap = -1.4 if t < 2 else (0.4 if t < 5 else 1.3)
        ref = sel.reference(t, _units(gap))
        assert ref is not None
        picks.append((t, ref.time))
    at = dict(picks)
    assert at[1.8] == BANK[0].time
    assert at[4.8] == BANK[1].time  # the window's median has moved to the half-open entry
    assert at[7.92] == BANK[2].time
    switches = sum(a[1] != b[1] for a, b in zip(picks, picks[1:], strict=False))
    assert switches == 2  # one per change of target, never back and forth


def test_small_changes_of_target_do_not_switch_the_reference() -> None:
    sel = BankSelector((_cand(0, 0.0), _cand(1, 0.5)), ReferenceConfig(refresh=0.0))
    assert sel.reference(0.0, _units(0.1)) is not None
    start = sel.current
    for i in range(1, 100):  # the target wanders around 0.2-0.3: nearer entry 1 by < margin
        sel.reference(i / 25, _units(0.2 + 0.1 * ((i // 7) % 2)))
    assert sel.current is start


def test_bank_use_start_hands_over_to_the_causal_pick_after_min_age() -> None:
    """bank_use "start": the bank serves the stream's first second (no stream frame is old
    enough yet), then the causal pick among the stream's own frames."""
    sel = BankSelector(BANK, ReferenceConfig(bank_use="start", min_age=1.0))
    refs = []
    for i in range(60):
        t = i / 25
        if sel.wants(t):
            sel.observe(t, np.full((4, 4, 3), 200, np.uint8), face(0.05))
        ref = sel.reference(t, _units(0.3))
        assert ref is not None
        refs.append(ref)
    assert all(r in BANK for r in refs[:25])  # the first second: the bank, never the live frame
    assert all(r not in BANK and r.time >= 0 and i / 25 - r.time >= 1.0 - 1e-9 for i, r in enumerate(refs) if i >= 25)
    assert BankSelector(BANK).wants(0.0) is False  # "always" keeps no stream frame
    with pytest.raises(ValueError, match="bank_use"):
        ReferenceConfig(bank_use="sometimes")


def test_make_selector_uses_the_bank_only_for_an_enrolled_bundle(tmp_path: Path) -> None:
    plain = load_bundle(DEFAULT_MODEL_DIR)
    assert isinstance(make_selector(plain, ReferenceConfig()), ReferenceSelector)
    enrolled = load_bundle(_bundle_with_bank(tmp_path / "b"))
    sel = make_selector(enrolled, ReferenceConfig())
    assert isinstance(sel, BankSelector)
    assert [c.gap for c in sel.bank] == [-1.5, 0.3, 1.2]
    assert sel.bank[1].hires is not None and sel.bank[1].hires.shape == (160, 160, 3)


def _bank_images() -> dict[str, np.ndarray]:
    """Three aligned 160 px crops of the portrait's face, each tinted (+60) on its own channel."""
    img = samples.portrait()
    with FaceTracker() as tr:
        obs = tr.track(img, 0.0)
    assert obs is not None
    face = hires.crop(img, align.estimate(obs.landmarks, 160))
    out = {}
    for k, name in enumerate(("closed", "mid", "open")):
        tint = face.astype(np.int16)
        tint[:, :, k] += 60
        out[name] = np.clip(tint, 0, 255).astype(np.uint8)
    return out


def _bundle_with_bank(root: Path, crop_size: int = 96) -> Path:
    shutil.copytree(DEFAULT_MODEL_DIR, root)
    (root / "references").mkdir()
    m = json.loads((root / "manifest.json").read_text())
    refs = []
    for (name, big), gap in zip(_bank_images().items(), (-1.5, 0.3, 1.2), strict=True):
        small = cv2.resize(big, (crop_size, crop_size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "references" / f"{name}.png"), small[:, :, ::-1])
        cv2.imwrite(str(root / "references" / f"{name}_160.png"), big[:, :, ::-1])
        refs.append({"name": name, "file": f"references/{name}.png", "hires": f"references/{name}_160.png", "gap": gap})
    m["references"] = refs
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def test_a_bank_file_outside_the_bundle_or_missing_is_refused(tmp_path: Path) -> None:
    root = _bundle_with_bank(tmp_path / "b")
    m = json.loads((root / "manifest.json").read_text())
    m["references"][0]["file"] = "../../elsewhere.png"
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="outside the bundle"):
        load_bundle(root)
    m["references"][0]["file"] = "references/gone.png"
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="missing"):
        load_bundle(root)


class RecordingBackend(Backend):
    """A real backend that keeps the reference crop of every generator call."""

    name = "recording"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.references: list[np.ndarray] = []

    def audio_to_lip(self, mel: np.ndarray, lookahead: np.ndarray) -> np.ndarray:
        return self.inner.audio_to_lip(mel, lookahead)

    def generate(self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray) -> np.ndarray:
        return self.generate_fields(pose, reference, units)[0]

    @property
    def has_fields(self) -> bool:
        return self.inner.has_fields

    def generate_fields(
        self, pose: np.ndarray, reference: np.ndarray, units: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        self.references.append(reference.copy())
        return self.inner.generate_fields(pose, reference, units)

    def close(self) -> None:
        self.inner.close()


def _dub(bundle_dir: Path, colour_match: bool, n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """``n`` frames of the moving portrait dubbed closed (0.4 s) then wide open: inputs, outputs,
    the references the generator was fed."""
    bundle = load_bundle(bundle_dir)
    backend = RecordingBackend(get_backend("onnx", bundle))
    frames = list(samples.head_motion(samples.portrait(), n, 25.0))
    outs = []
    with FaceTracker() as tr:
        pipe = DubPipeline(bundle, backend, tr, PipelineConfig(colour_match=colour_match))
        for i, f in enumerate(frames):
            img = f.copy()
            gap = -1.4 if i < 10 else 1.3
            assert pipe.process(img, i / 25, units=_units(gap)).face
            outs.append(img)
    backend.close()
    refs = [(r[0].transpose(1, 2, 0) * 255).round().astype(np.uint8) for r in backend.references]
    return frames, outs, refs


def _tint(frame: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Mean signed change per channel where the frame changed."""
    d = (out.astype(np.float32) - frame.astype(np.float32)).reshape(-1, 3)
    return d[np.abs(d).max(1) > 2].mean(0)


def test_the_pipeline_renders_from_the_bank_and_matches_colour_to_the_live_frame(tmp_path: Path) -> None:
    root = _bundle_with_bank(tmp_path / "b")
    bank = {n: cv2.imread(str(root / "references" / f"{n}.png"))[:, :, ::-1] for n in ("closed", "mid", "open")}
    frames, outs, refs = _dub(root, colour_match=True, n=60)
    assert len(refs) == 60
    assert np.array_equal(refs[0], bank["closed"])  # the first frame already renders from the bank
    assert all(any(np.array_equal(r, b) for b in bank.values()) for r in refs)  # never a stream frame
    # re-picked after refresh (2 s): the window is mostly open by then
    assert np.array_equal(refs[49], bank["closed"]) and np.array_equal(refs[51], bank["open"])
    # the closed reference is red +60: matched to the live frame, the output is not red
    matched = _tint(frames[5], outs[5])
    _, raw, _ = _dub(root, colour_match=False, n=6)
    unmatched = _tint(frames[5], raw[5])
    assert unmatched[0] - unmatched[1:].mean() > 20, unmatched
    assert abs(matched[0] - matched[1:].mean()) < 0.5 * (unmatched[0] - unmatched[1:].mean()), (matched, unmatched)
