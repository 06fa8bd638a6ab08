"""Provenance of the instruments: which model bundle was measured and which lip-sync expert
scored it (its files' hashes, its training record, the status paragraph of its README.md).

LSE figures are only as good as the expert behind them, so the report states from the
expert's own files whether its AV-offset accuracy was ever validated, and a missing default
expert gives null figures with the reason rather than a failed run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import BenchConfig


def model_info(model: Path | None) -> dict[str, Any]:
    """The measured model bundle: its folder, name, crop size and the hashes of its files."""
    import hashlib

    from ...model import load_bundle

    b = load_bundle(model)
    files = {}
    for p in (b.a2l_path, b.generator_path, b.root / "manifest.json"):
        files[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return {"root": str(b.root), "name": b.info.get("name"), "crop_size": b.crop_size, "sha256_16": files}


def _sha16(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _offset_accuracy_fields(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every entry of the manifest that records an AV-offset accuracy (a key path naming an
    offset and an accuracy or a ±k rate), wherever an export put it."""
    found: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            low = path.lower()  # the whole path: e.g. heldout.offsets.within_1
            if "offset" in low and any(w in low for w in ("acc", "within", "correct")) and not isinstance(v, dict):
                found[path] = v
            else:
                found |= _offset_accuracy_fields(v, path)
    return found


def _readme_status(root: Path) -> str | None:
    """The paragraph of the bundle's README.md that starts with "Status" (markdown removed)."""
    f = root / "README.md"
    if not f.is_file():
        return None
    for para in f.read_text(errors="replace").split("\n\n"):
        text = " ".join(para.split()).replace("**", "")
        if text.lower().startswith("status"):
            return text
    return None


def expert_provenance(root: Path, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Where the expert bundle comes from and how good it is, from its own files only."""
    info: dict[str, Any] = {
        "root": str(root),
        "sha256_16": {n: _sha16(root / n) for n in ("video.onnx", "audio.onnx", "manifest.json")},
        "readme_status": _readme_status(root),
    }
    if manifest is None:
        return info
    tr = manifest.get("training") or {}
    info |= {
        "format": manifest.get("format"),
        "window": {k: manifest.get(k) for k in ("frames", "crop_size", "mel_frames", "mel_start")},
        "embed": manifest.get("embed"),
        "training": {
            k: tr.get(k) for k in ("step", "seconds", "augment", "train", "held_out", "held_out_scores") if k in tr
        },
        "offset_accuracy": _offset_accuracy_fields(manifest),
    }
    if info["offset_accuracy"]:
        acc = ", ".join(f"{k} = {v}" for k, v in info["offset_accuracy"].items())
        info["assessment"] = f"held-out AV-offset accuracy recorded in its manifest: {acc}"
    else:
        info["assessment"] = "its manifest records no held-out AV-offset accuracy" + (
            f"; {root / 'README.md'} says: {info['readme_status']}"
            if info["readme_status"]
            else ", so its LSE figures are unvalidated"
        )
    return info


def load_expert(cfg: BenchConfig) -> tuple[Any, dict[str, Any]]:
    """The lip-sync expert of ``cfg`` and its provenance. An explicit ``cfg.expert`` that does
    not load raises ModelError; a missing default bundle gives (None, reason)."""
    from ...exceptions import ModelError
    from ..avsync import SyncNetExpert, default_expert_dir

    root = cfg.expert if cfg.expert is not None else default_expert_dir()
    try:
        ex = SyncNetExpert(root, threads=cfg.threads)
    except ModelError as exc:
        if cfg.expert is not None:
            raise
        info = expert_provenance(root, None)
        return None, info | {"status": "absent", "reason": f"no lip-sync expert: {exc}"}
    except Exception as exc:  # noqa: BLE001 - onnxruntime rejecting the files
        if cfg.expert is not None:
            raise ModelError(f"{root}: lip-sync expert does not load ({type(exc).__name__}: {exc})") from exc
        info = expert_provenance(root, None)
        return None, info | {"status": "absent", "reason": f"lip-sync expert does not load: {exc}"}
    return ex, expert_provenance(root, ex.manifest) | {"status": "loaded", "reason": None}
