"""Cross-identity talking clips: new faces driven by real clips' lip motion, for the lip-sync expert.

    python -m training.synth_talk --data data2/train --faces ../shared/media/faces \
        --bundle engines/hq --out data2/synth --exclude '*feifeili*' --exclude '*andrew*'

The expert learns the identities it is trained on (issue 3, item 3: five real identities,
chance-level offsets on some unseen faces). This makes more identities with sync that is
right by construction: every portrait in ``--faces`` is animated by every prepared training
clip — the clip's tracked lip shapes (the bundle's lip units, z-scored per clip as in
training) drive the bundle's generator on the portrait's own aligned crop (pose and identity
reference), frame by frame, and the shard keeps the clip's audio, frame times and landmarks.
So the mouth moves with the real audio exactly as the driving speaker's did, on a face the
expert has never seen; the head is still (the expert's similarity augmentation moves it).

One shard per (portrait, clip) pair, ``OUT/synth_<face>__<clip>.npz``, in the format of
training/prepare.py (crops, canon, times, valid, wav, fps), written atomically; existing
shards are skipped. The shards hold pixels made from the portraits and the clips' audio:
keep them out of any repository (``data2/`` is ignored).
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from rtdub import align
from rtdub.blend import face_mask
from rtdub.exceptions import InputError, ModelError
from rtdub.model import ModelBundle, load_bundle
from rtdub.tracker import FaceTracker

from .data import Clip, attach_units, context_units, load_clip

logger = logging.getLogger("training.synth_talk")

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def portrait_crop(path: Path, size: int) -> np.ndarray:
    """The aligned (size, size, 3) RGB face crop of a still portrait."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(str(path), "not a readable image")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with FaceTracker() as tracker:
        obs = tracker.track(image, 0.0)
    if obs is None:
        raise InputError(str(path), "no face found")
    return align.warp_to_crop(image, align.estimate(obs.landmarks, size))


def animate(
    session: ort.InferenceSession, crop: np.ndarray, clip: Clip, bundle: ModelBundle, batch: int = 64
) -> np.ndarray:
    """(N, S, S, 3) uint8 frames: ``crop`` with its mouth driven by ``clip``'s lip units; frames
    where the clip has no face are the still crop unchanged (they are marked invalid anyway).
    The units are ``clip.units``: the clip's, z-scored over the clip as in training
    (``attach_units`` with the bundle's basis, once per clip however many portraits it drives)."""
    if clip.units is None:
        raise ValueError(f"{clip.name}: no lip units (attach_units with the bundle's basis first)")
    s = bundle.crop_size
    img = crop.astype(np.float32).transpose(2, 0, 1)[None] / 255
    pose = img * (1 - face_mask(s).hidden.astype(np.float32))
    out = np.repeat(crop[None], len(clip.lips), axis=0)
    idx = np.nonzero(clip.valid)[0]
    for b in range(0, len(idx), batch):
        sel = idx[b : b + batch]
        units = np.stack([context_units(clip, int(i), bundle.context) for i in sel]).astype(np.float32)
        n = len(sel)
        face = session.run(
            ["face"],
            {"pose": np.repeat(pose, n, 0), "reference": np.repeat(img, n, 0), "units": units},
        )[0]
        out[sel] = (np.clip(face, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    return out


KEPT = ("canon", "times", "valid", "wav", "fps")  # what a shard takes from its driving shard


def write_shard(dst: Path, frames: np.ndarray, kept: dict[str, np.ndarray]) -> None:
    """The driving shard's ``KEPT`` arrays with the new frames, written atomically."""
    tmp = dst.with_name(dst.name + ".part.npz")
    np.savez(tmp, crops=frames, **kept)
    tmp.replace(dst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="animate portraits with real clips' lip motion (sync-expert data)")
    p.add_argument("--data", type=Path, default=Path("data2/train"), help="prepared driving shards")
    p.add_argument("--faces", type=Path, required=True, help="folder of portraits")
    p.add_argument("--bundle", type=Path, default=Path("engines/hq"), help="model bundle whose generator animates")
    p.add_argument("--out", type=Path, default=Path("data2/synth"))
    p.add_argument("--exclude", action="append", default=[], help="driving clips to leave out (glob, repeatable)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        bundle = load_bundle(args.bundle)
        faces = sorted(f for f in args.faces.iterdir() if f.suffix.lower() in IMAGE_EXT) if args.faces.is_dir() else []
        if not faces:
            raise InputError(str(args.faces), "no portraits (png/jpg/webp/bmp)")
        sources = [
            f
            for f in sorted(args.data.glob("*.npz"))
            if not f.name.endswith(".part.npz") and not any(fnmatch.fnmatch(f.stem, g) for g in args.exclude)
        ]
        if not sources:
            raise InputError(str(args.data), "no driving shards left")
    except (InputError, ModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(bundle.generator_path), opts, providers=["CPUExecutionProvider"])
    args.out.mkdir(parents=True, exist_ok=True)
    crops: dict[str, np.ndarray] = {}
    for f in faces:
        try:
            crops[f.stem] = portrait_crop(f, bundle.crop_size)
        except InputError as exc:
            logger.warning("skipped: %s", exc)
    for src in sources:
        todo = {n: args.out / f"synth_{n}__{src.stem}.npz" for n in crops}
        todo = {n: dst for n, dst in todo.items() if not dst.exists()}
        if not todo:
            continue
        clip = load_clip(src)
        if not clip.has_audio or clip.valid.sum() < 2:
            continue
        attach_units([clip], bundle.basis)
        with np.load(src) as z:
            kept = {k: z[k] for k in KEPT}
        for name, dst in todo.items():
            write_shard(dst, animate(session, crops[name], clip, bundle), kept)
            logger.info("%s: %d frames", dst.name, int(clip.valid.sum()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
