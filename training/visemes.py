"""The fused audio drive's pieces (training/train_visemes.py is its command line).

A viseme recogniser (training.pretrain_a2l ``--task phones``) gives class log-probabilities
for the mel window the audio-to-lip model sees; a ridge map per recogniser takes them to the
bundle's lip units (:func:`fit_maps`), several recognisers' maps are averaged
(:class:`VisemeEnsemble`), and :func:`export_fused` writes one ONNX graph mixing that with the
bundle's audio-to-lip model, under its input and output names (:func:`fused_onnx`);
:func:`write_bundle` makes a bundle of it that keeps the base model (manifest ``a2l.baseline``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from engines.onnx_export import OPSET
from rtdub import audio
from rtdub.audio import StaticMel
from rtdub.backends import get_backend
from rtdub.drive.audio import AudioDriveConfig, AudioStage
from rtdub.drive.phones import N_CLASSES
from rtdub.drive.phonetic import fit_ridge
from rtdub.model import load_bundle

from .common import articulation, corr
from .data import Clip

GAP = -1  # the inner-gap unit
ALPHAS = (1.0, 10.0, 100.0, 1000.0)
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
EXCLUDE = ("*noaudio*",)


@dataclass
class Sample:
    clip: Clip
    ident: str
    times: np.ndarray  # valid frames' times (picture clock)
    units: np.ndarray  # (N, U) true z-units
    logp: list[np.ndarray]  # per recogniser, (N, C) class log-probabilities at those frames


Fitted = tuple[np.ndarray, np.ndarray, np.ndarray]  # a map's weights (C + 1, U), gain (U,), centre (U,)


class VisemeMap(torch.nn.Module):
    """mel (B, W, 80), lookahead (B, 1) -> units (B, U): the recogniser's class
    log-probabilities through the fitted affine map and the articulation gain."""

    def __init__(self, recogniser: torch.nn.Module, weights: np.ndarray, gain: np.ndarray, centre: np.ndarray) -> None:
        super().__init__()
        self.rec = recogniser
        self.w: torch.Tensor
        self.b: torch.Tensor
        self.gain: torch.Tensor
        self.centre: torch.Tensor
        self.register_buffer("w", torch.from_numpy(np.asarray(weights[:-1], np.float32)))
        self.register_buffer("b", torch.from_numpy(np.asarray(weights[-1], np.float32)))
        self.register_buffer("gain", torch.from_numpy(np.asarray(gain, np.float32)))
        self.register_buffer("centre", torch.from_numpy(np.asarray(centre, np.float32)))

    def forward(self, mel: torch.Tensor, lookahead: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.rec(mel, lookahead)[:, :N_CLASSES], dim=1)
        y = logp @ self.w + self.b
        return self.centre + self.gain * (y - self.centre)


class VisemeEnsemble(torch.nn.Module):
    """The mean of several recognisers' mapped units (seeds: less variance than any one)."""

    def __init__(self, recognisers: Sequence[torch.nn.Module], fits: Sequence[Fitted]) -> None:
        super().__init__()
        self.maps = torch.nn.ModuleList(VisemeMap(r, *f) for r, f in zip(recognisers, fits, strict=True))

    def forward(self, mel: torch.Tensor, lookahead: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(mel, lookahead) for m in self.maps]).mean(0)


def class_logp(rec: torch.nn.Module, clip: Clip, times: np.ndarray, lookahead: float, window: int) -> np.ndarray:
    """(N, C) log-probabilities of the visual classes for frames shown at ``times``."""
    ts = times + clip.audio_lag
    w = np.stack([audio.mel_window(clip.mel, float(t), lookahead, window) for t in ts]).astype(np.float32)
    with torch.no_grad():
        lg = rec(torch.from_numpy(w), torch.full((len(w), 1), lookahead))[:, :N_CLASSES]
        return torch.log_softmax(lg, 1).numpy()


def design(logp: np.ndarray) -> np.ndarray:
    return np.concatenate([logp, np.ones((len(logp), 1), np.float32)], 1)


def fit_map(samples: list[Sample], alpha: float, max_gain: float, k: int = 0) -> Fitted:
    """The ridge map of recogniser ``k``'s log-probabilities to the units, with its gain."""
    x = np.concatenate([design(s.logp[k]) for s in samples])
    y = np.concatenate([s.units for s in samples])
    w = fit_ridge(x, y, alpha)
    gain, centre = articulation(x @ w, y, max_gain)
    return w, gain, centre


def fit_maps(samples: list[Sample], alpha: float, max_gain: float) -> list[Fitted]:
    return [fit_map(samples, alpha, max_gain, k) for k in range(len(samples[0].logp))]


def mapped(s: Sample, fits: list[Fitted]) -> np.ndarray:
    """The sample's units from the recognisers' maps, averaged (unsmoothed)."""
    return np.mean([c + g * (design(lp) @ w - c) for lp, (w, g, c) in zip(s.logp, fits, strict=True)], axis=0)


def fused_onnx(base: Path, part: Path, weight: float, out: Path) -> None:
    """One graph: ``base`` (a2l.onnx) and ``part`` (the exported VisemeMap, same inputs),
    mixed as (1 - weight) * base + weight * part, under base's input and output names."""
    a, b = onnx.load(str(base)), onnx.load(str(part))
    ins = [i.name for i in a.graph.input]
    out_name = a.graph.output[0].name
    b = onnx.compose.add_prefix(b, "rec/", rename_inputs=False, rename_outputs=True)
    if [i.name for i in b.graph.input] != ins:
        raise ValueError(f"input names differ: {ins} vs {[i.name for i in b.graph.input]}")
    g = a.graph
    a_out = "a2l/" + out_name
    for n in g.node:
        n.output[:] = [a_out if o == out_name else o for o in n.output]
    g.node.extend(b.graph.node)
    g.initializer.extend(b.graph.initializer)
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(1.0 - weight, np.float32), "mix/base_weight"),
            numpy_helper.from_array(np.array(weight, np.float32), "mix/rec_weight"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Mul", [a_out, "mix/base_weight"], ["mix/base"]),
            helper.make_node("Mul", [b.graph.output[0].name, "mix/rec_weight"], ["mix/rec"]),
            helper.make_node("Add", ["mix/base", "mix/rec"], [out_name]),
        ]
    )
    onnx.checker.check_model(a, full_check=True)
    tmp = out.with_name(out.name + ".part")
    onnx.save(a, str(tmp))
    tmp.replace(out)


def export_fused(
    recs: Sequence[torch.nn.Module], fits: Sequence[Fitted], basis: Path, weight: float, out: Path
) -> float:
    """Write ``out`` (the fused graph) and return its max abs difference from torch + the
    base graph on random inputs."""
    import onnxruntime as ort

    m = VisemeEnsemble(recs, fits).eval()
    bundle = load_bundle(basis).audio_model("base")  # a fused basis: mix into its base model
    part = out.with_name(out.stem + ".rec.onnx")
    x = (torch.randn(2, bundle.mel_window, audio.N_MELS), torch.full((2, 1), 0.04))
    with torch.no_grad():
        torch.onnx.export(
            m, x, str(part), input_names=["mel", "lookahead"], output_names=["units"],
            dynamic_axes={"mel": {0: "batch"}, "lookahead": {0: "batch"}, "units": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
        ref_rec = m(*x).numpy()
    fused_onnx(bundle.a2l_path, part, weight, out)
    part.unlink()
    feeds = {"mel": x[0].numpy(), "lookahead": x[1].numpy()}
    base = ort.InferenceSession(str(bundle.a2l_path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return float(np.max(np.abs(got - ((1 - weight) * base + weight * ref_rec))))


def write_bundle(basis: Path, fused: Path, out: Path, info: dict[str, object]) -> None:
    """A copy of the ``basis`` bundle whose audio drive is ``fused``; its own a2l.onnx stays as
    the baseline (manifest ``a2l.baseline``)."""
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(basis, tmp)
    shutil.copy2(fused, tmp / "a2l_fused.onnx")
    man = json.loads((tmp / "manifest.json").read_text())
    man["a2l"]["baseline"] = man["a2l"].get("baseline", man["a2l"]["file"])
    man["a2l"]["file"] = "a2l_fused.onnx"
    man["a2l"]["fused"] = info
    (tmp / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)


def runtime_units(bundle_dir: Path, s: Sample, lookahead_ms: float, audio_model: str = "fused") -> np.ndarray:
    """The bundle's audio drive (``audio_model``) on the sample's frames, as the runtime computes it."""
    bundle = load_bundle(bundle_dir).audio_model(audio_model)
    stage = AudioStage(bundle, get_backend("onnx", bundle), AudioDriveConfig(lookahead_ms=lookahead_ms))
    mel = StaticMel(s.clip.mel)
    c = s.clip
    units = np.zeros((len(c.times), bundle.n_units), np.float32)
    for i, t in enumerate(c.times):
        units[i] = stage.units_at(mel, float(t) + c.audio_lag)[0]
    return units[c.valid]


def moc(pred: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return corr(np.concatenate([p[:, GAP] for p in pred]), np.concatenate([t[:, GAP] for t in truth]))
