"""Export a trained lip-sync expert (training/train_sync.py) to an ONNX bundle.

    python -m engines.export_sync --run runs/sync_aug --out engines/syncnet

Writes video.onnx (frames (B, 15, S/2, S) -> embedding (B, E)), audio.onnx
(mel (B, 16, 80) -> embedding (B, E)) and manifest.json (window sizes, training record,
parity; with ``--heldout RESULTS --heldout-expert NAME`` also the held-out offset and
crop-shift results that training/eval_sync.py measured for that expert, as ``heldout``, so
that ``rtdub bench`` can quote them), checks both with the ONNX checker and compares them with torch on random inputs
(max abs error must stay under ``PARITY_TOL``). rtdub/measure/avsync.py loads the bundle with
onnxruntime only. Files are written under temporary names and renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from training.common import load_checkpoint
from training.syncnet import SyncConfig, SyncNet

OPSET = 17
FORMAT = "rtdub-syncnet/1"
PARITY_TOL = 1e-4  # on unit-norm embeddings


def load_run(run: Path) -> tuple[SyncNet, dict[str, Any]]:
    meta = json.loads((run / "meta.json").read_text())
    m = SyncNet(SyncConfig(**meta["config"]))
    load_checkpoint(run, m)
    return m.eval(), meta


def example_inputs(model: SyncNet, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    c = model.cfg
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, 3 * c.frames, c.crop_size // 2, c.crop_size, generator=g)
    mel = torch.rand(batch, c.mel_frames, c.n_mels, generator=g) * 8 - 4
    return frames, mel


def _export(module: torch.nn.Module, x: torch.Tensor, name: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    with torch.no_grad():
        torch.onnx.export(
            module,
            (x,),
            str(tmp),
            input_names=[name],
            output_names=["embedding"],
            dynamic_axes={name: {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    os.replace(tmp, path)


def parity(model: SyncNet, out: Path, batch: int = 8) -> dict[str, float]:
    """Max abs difference between torch and onnxruntime embeddings on random inputs."""
    import onnxruntime as ort

    frames, mel = example_inputs(model, batch, seed=1)
    with torch.no_grad():
        ref_v, ref_a = model.video(frames).numpy(), model.audio(mel).numpy()
    sv = ort.InferenceSession(str(out / "video.onnx"), providers=["CPUExecutionProvider"])
    sa = ort.InferenceSession(str(out / "audio.onnx"), providers=["CPUExecutionProvider"])
    got_v = sv.run(None, {"frames": frames.numpy()})[0]
    got_a = sa.run(None, {"mel": mel.numpy()})[0]
    return {"video": float(np.max(np.abs(ref_v - got_v))), "audio": float(np.max(np.abs(ref_a - got_a)))}


def export_bundle(model: SyncNet, out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write video.onnx, audio.onnx and manifest.json into ``out``; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    frames, mel = example_inputs(model, 2)
    _export(model.video, frames, "frames", out / "video.onnx")
    _export(model.audio, mel, "mel", out / "audio.onnx")
    c = model.cfg
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "frames": c.frames,
        "crop_size": c.crop_size,
        "mel_frames": c.mel_frames,
        "mel_start": 0.0,
        "embed": c.embed,
        "video": {"file": "video.onnx", "input": [3 * c.frames, c.crop_size // 2, c.crop_size]},
        "audio": {"file": "audio.onnx", "input": [c.mel_frames, c.n_mels]},
        "config": c.to_dict(),
        "opset": OPSET,
        "parity_max_abs": parity(model, out),
        "parity_tolerance": PARITY_TOL,
        **(extra or {}),
    }
    tmp = out / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")
    return manifest


def heldout_record(results: Path, expert: str | None) -> dict[str, Any]:
    """The held-out measurement of one expert from eval_sync's results.json: offset
    detection (fraction within ±1 frame, exact, per clip) and the crop-shift rows."""
    res = json.loads(results.read_text())
    if expert is None:
        if len(res) != 1:
            raise ValueError(f"several experts ({', '.join(res)}): give --heldout-expert")
        expert = next(iter(res))
    if expert not in res:
        raise ValueError(f"no expert {expert!r} (have {', '.join(res)})")
    r = res[expert]
    return {
        "protocol": r.get("protocol", {}),
        "offsets": r["offsets"],
        "per_clip_within_1": r["per_clip_within_1"],
        "shift": r["shift"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="export the lip-sync expert to an ONNX bundle")
    p.add_argument("--run", type=Path, required=True, help="training run directory")
    p.add_argument("--out", type=Path, default=Path("engines/syncnet"))
    p.add_argument("--heldout", type=Path, help="results.json of training/eval_sync.py")
    p.add_argument("--heldout-expert", help="which expert of --heldout this run is")
    p.add_argument("--heldout-note", help="caveat stored with the held-out record (e.g. how the checkpoint was chosen)")
    args = p.parse_args(argv)
    if not (args.run / "meta.json").is_file():
        print(f"export_sync: error: {args.run}: no checkpoint", file=sys.stderr)
        return 2
    extra: dict[str, Any] = {}
    if args.heldout is not None:
        try:
            extra["heldout"] = heldout_record(args.heldout, args.heldout_expert)
            if args.heldout_note:
                extra["heldout"]["note"] = args.heldout_note
        except (OSError, ValueError, KeyError) as exc:
            print(f"export_sync: error: {args.heldout}: {exc}", file=sys.stderr)
            return 2
    model, meta = load_run(args.run)
    keys = (
        *("step", "seconds", "augment", "appearance", "voice", "lip_weight", "audio_lip_weight"),
        *("lr", "weight_decay", "audio_lags", "validation", "validation_offsets", "train"),
    )
    training = {k: meta.get(k) for k in (*keys, "held_out", "held_out_scores", "held_out_offsets") if k in meta}
    man = export_bundle(model, args.out, {"training": training, **extra})
    worst = max(man["parity_max_abs"].values())
    print(f"torch vs onnxruntime max abs error {worst:.2e} (tolerance {PARITY_TOL:.0e})")
    return 0 if worst <= PARITY_TOL else 1


if __name__ == "__main__":
    raise SystemExit(main())
