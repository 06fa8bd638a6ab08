"""Torch weights back from an exported ONNX generator (a library module: no command line).

The shipped bundles hold ONNX only; a fine-tune (rtdub enroll) needs the generator in torch.
engines/export.py exported ``training.models.LipToFace`` (wrapped in ``GeneratorWithFields``)
with ``do_constant_folding=True`` in eval mode, and what survives of its parameters is:

- every Linear (``units_mlp``, ``film.*.lin``) and every Conv that has no BatchNorm after it
  (``head``, a ``colour_head``): under their own names, ``gen.<parameter>``;
- every Conv followed by a BatchNorm (the encoder and decoder blocks): folded into one Conv
  with a bias, ``W' = W·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)``, renamed ``onnx::Conv_<n>``.
  The graph's node names keep the module path (``/enc.0/enc.0.0/Conv``), so each folded Conv
  is found by the module that made it.

The fold cannot be undone uniquely (W, γ, μ and σ² are four unknowns for two numbers), so a
folded pair is rebuilt as the Conv with ``W'`` and an identity BatchNorm carrying the bias:
μ = 0, σ² = 1, γ = √(1+ε), β = ``b'``. In eval mode this is the exported function exactly (up
to float rounding: :func:`parity` measures it); in training mode BatchNorm would normalise with
batch statistics the original's running ones no longer describe, so a fine-tune keeps the
BatchNorms in eval mode (:func:`freeze_batchnorm`) and trains their affine γ, β with the rest.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.models import GenConfig, LipToFace

logger = logging.getLogger(__name__)

PREFIX = "gen."  # the exported module is GeneratorWithFields(gen)


class RecoveryError(ValueError):
    """The ONNX graph does not hold the weights of the module it is loaded into."""


@dataclass(frozen=True)
class Recovery:
    """What :func:`load_onnx_weights` found: parameters copied by name, and (conv, batchnorm)
    module pairs rebuilt from one folded Conv."""

    named: tuple[str, ...]
    folded: tuple[tuple[str, str], ...]

    def summary(self) -> str:
        return f"{len(self.named)} tensors by name, {len(self.folded)} conv+batchnorm pairs unfolded"


def _module_path(node: onnx.NodeProto) -> str:
    """``/dec.0/dec.0.3/Conv`` -> ``dec.0.3`` (the scope of the module that made the node)."""
    parts = [p for p in node.name.split("/") if p]
    if len(parts) < 2:
        raise RecoveryError(f"ONNX node {node.name!r} ({node.op_type}) has no module scope in its name")
    return parts[-2]


def _next_batchnorm(model: nn.Module, path: str) -> tuple[str, nn.BatchNorm2d] | None:
    """The BatchNorm right after module ``path`` in its parent Sequential, if any."""
    parent_path, _, index = path.rpartition(".")
    if not index.isdigit():
        return None
    parent = model.get_submodule(parent_path) if parent_path else model
    if not isinstance(parent, nn.Sequential) or int(index) + 1 >= len(parent):
        return None
    nxt = parent[int(index) + 1]
    return (f"{parent_path}.{int(index) + 1}", nxt) if isinstance(nxt, nn.BatchNorm2d) else None


def _set(target: dict[str, torch.Tensor], key: str, value: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> None:
    if key not in shapes:
        raise RecoveryError(f"the module has no tensor {key!r}")
    if tuple(value.shape) != shapes[key]:
        raise RecoveryError(f"{key}: ONNX shape {tuple(value.shape)}, module shape {shapes[key]}")
    if key in target:
        raise RecoveryError(f"{key}: given twice by the ONNX graph")
    target[key] = torch.from_numpy(np.array(value, np.float32, copy=True))


def load_onnx_weights(model: nn.Module, path: Path, prefix: str = PREFIX) -> Recovery:
    """Load the initializers of the ONNX model at ``path`` into ``model`` (the module that was
    exported, under ``prefix``): named tensors by name, folded Conv+BatchNorm pairs by the
    module path in the node names (module docstring). Every tensor of ``model``'s state and
    every initializer of the graph must be accounted for, else :class:`RecoveryError`."""
    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    got: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    named: list[str] = []
    for key in state:
        if prefix + key in inits:
            _set(got, key, inits[prefix + key], shapes)
            used.add(prefix + key)
            named.append(key)
    folded: list[tuple[str, str]] = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        weights = [n for n in node.input[1:] if n in inits]
        if not weights or all(n in used for n in weights):
            continue
        path_ = _module_path(node)
        try:
            module = model.get_submodule(path_)
        except AttributeError as exc:
            raise RecoveryError(f"ONNX node {node.name}: the module has no {path_!r}") from exc
        w = inits[node.input[1]]
        b = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "Gemm":
            if not isinstance(module, nn.Linear):
                raise RecoveryError(f"ONNX node {node.name}: {path_} is not a Linear")
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            _set(got, f"{path_}.weight", w if trans_b else w.T, shapes)
            if b is not None:
                _set(got, f"{path_}.bias", b, shapes)
            named.append(path_)
        else:
            if not isinstance(module, nn.Conv2d):
                raise RecoveryError(f"ONNX node {node.name}: {path_} is not a Conv2d")
            _set(got, f"{path_}.weight", w, shapes)
            bn = _next_batchnorm(model, path_)
            if bn is not None and module.bias is None:
                bn_path, bn_mod = bn
                c = bn_mod.num_features
                bias = b if b is not None else np.zeros(c, np.float32)
                _set(got, f"{bn_path}.weight", np.full(c, math.sqrt(1.0 + bn_mod.eps), np.float32), shapes)
                _set(got, f"{bn_path}.bias", bias, shapes)
                _set(got, f"{bn_path}.running_mean", np.zeros(c, np.float32), shapes)
                _set(got, f"{bn_path}.running_var", np.ones(c, np.float32), shapes)
                got[f"{bn_path}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
                folded.append((path_, bn_path))
            elif b is not None:
                _set(got, f"{path_}.bias", b, shapes)
        used.update(weights)
    missing = sorted(set(state) - set(got))
    unused = sorted(set(inits) - used)
    if missing or unused:
        raise RecoveryError(f"{path}: module tensors not in the graph {missing[:6]}, graph tensors unused {unused[:6]}")
    model.load_state_dict(got, strict=True)
    rec = Recovery(tuple(named), tuple(folded))
    logger.info("%s: %s", path, rec.summary())
    return rec


def generator_from_bundle(bundle: Path) -> tuple[LipToFace, Recovery]:
    """The generator of the bundle at ``bundle`` (its manifest's ``generator.config``, the
    ``GenConfig`` it was exported from) in torch, in eval mode, with its ONNX weights."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    gen = manifest["generator"]
    if "config" not in gen:
        raise RecoveryError(f"{bundle}: the manifest gives no generator config to rebuild the module from")
    model = LipToFace(GenConfig(**gen["config"]))
    rec = load_onnx_weights(model, bundle / gen["file"])
    return model.eval(), rec


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm of ``model`` in eval mode (running statistics fixed; γ, β still
    train); call after ``model.train()``. Returns how many there are."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n


def parity(model: LipToFace, path: Path, batch: int = 4, seed: int = 0) -> dict[str, float]:
    """Max abs difference between ``model`` (eval mode) and onnxruntime on the ONNX model at
    ``path``, per output (face, fields), on random inputs."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    s, c = model.cfg.size, model.cfg
    pose = torch.rand(batch, 3, s, s, generator=g)
    ref = torch.rand(batch, 3, s, s, generator=g)
    units = torch.randn(batch, c.context, c.units, generator=g)
    with torch.no_grad():
        fields = model.fields(pose, ref, units)
        face = model.compose(ref, fields)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"pose": pose.numpy(), "reference": ref.numpy(), "units": units.numpy()}
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, feeds), strict=True))
    mine = {"face": face.numpy(), "fields": fields.numpy()}
    return {k: float(np.max(np.abs(mine[k] - outs[k]))) for k in names if k in mine}
