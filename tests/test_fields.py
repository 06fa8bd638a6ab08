"""The generator's field layout is read from the bundle's manifest in one place
(rtdub.model.FieldLayout): a bundle that declares its channels in another order composites
exactly as the default order does, an old manifest gets the default, and a layout without a
needed channel is refused at load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub.exceptions import ModelError
from rtdub.face import align
from rtdub.model import DEFAULT_MODEL_DIR, FIELD_CHANNELS, FieldLayout, load_bundle
from rtdub.render import hires
from rtdub.render.blend import face_mask

S = 96


def _fields(rng: np.random.Generator) -> np.ndarray:
    f = np.zeros((6, S, S), np.float32)
    flow = cv2.GaussianBlur(rng.standard_normal((S, S, 2)).astype(np.float32), (0, 0), 6)
    f[0:2] = flow.transpose(2, 0, 1) * (0.02 / np.abs(flow).max())
    f[2] = rng.uniform(0.2, 0.9, (S, S))
    f[3:6] = rng.uniform(0.2, 0.8, (3, S, S))
    return f


def test_a_permuted_layout_composites_like_the_default() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    al = hires.scaled(align.Alignment(np.array([[0.5, 0.02, -60.0], [-0.02, 0.5, -40.0]]), S), 192)
    ref = align.warp_to_crop(frame, al).astype(np.float32)
    fields = _fields(rng)
    order = ("red", "alpha", "flow_y", "blue", "flow_x", "green")
    perm = FieldLayout(order)
    permuted = fields[[FIELD_CHANNELS.index(c) for c in order]]
    a, b = frame.copy(), frame.copy()
    hires.composite_into(a, ref, fields, al, face_mask(192), cv2.INTER_CUBIC, None, 0.5)
    hires.composite_into(b, ref, permuted, al, face_mask(192), cv2.INTER_CUBIC, None, 0.5, perm)
    assert (a != frame).any()
    assert np.array_equal(a, b)
    # the permuted fields read with the default layout are another face
    c = frame.copy()
    hires.composite_into(c, ref, permuted, al, face_mask(192), cv2.INTER_CUBIC, None, 0.5)
    assert not np.array_equal(a, c)


def test_layout_indices() -> None:
    lay = FieldLayout()
    assert (lay.count, lay.alpha, lay.sampled, lay.colour) == (6, 2, (0, 1, 2), (3, 4, 5))
    with pytest.raises(ValueError, match="alpha"):
        FieldLayout(("flow_x", "flow_y", "red", "green", "blue"))
    with pytest.raises(ValueError):
        FieldLayout((*FIELD_CHANNELS, "alpha"))


def _bundle_copy(tmp: Path, edit: dict[str, object] | None) -> Path:
    root = tmp / "bundle"
    shutil.copytree(DEFAULT_MODEL_DIR, root)
    m = json.loads((root / "manifest.json").read_text())
    if edit is None:
        m["generator"].pop("fields", None)
    else:
        m["generator"]["fields"] = edit
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def test_manifest_layout(tmp_path: Path) -> None:
    assert load_bundle().fields == FieldLayout()  # the shipped bundle declares the default order
    assert load_bundle(_bundle_copy(tmp_path / "old", None)).fields == FieldLayout()
    order = ["alpha", "flow_x", "flow_y", "red", "green", "blue"]
    assert load_bundle(_bundle_copy(tmp_path / "perm", {"channels": order})).fields.channels == tuple(order)
    with pytest.raises(ModelError, match="malformed manifest"):
        load_bundle(_bundle_copy(tmp_path / "bad", {"channels": ["flow_x", "flow_y", "alpha"]}))
