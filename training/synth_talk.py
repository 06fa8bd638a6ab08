"""Cross-identity talking clips: new faces driven by real clips' lip motion, for the lip-sync expert.

    python -m training.synth_talk --data data2/train --faces ../shared/media/faces \
        --bundle engines/hq --out data2/synth --exclude '*feifeili*' --exclude '*andrew*'
    python -m training.synth_talk --speech ../shared/media/audio --speech data2/tts --exclude 'french*' \
        --faces ../shared/media/faces --bundle engines/hq --out data2/synth_speech

The expert learns the identities it is trained on (issue 3, item 3: five real identities,
chance-level offsets on some unseen faces). This makes more identities with sync that is
right by construction: every portrait in ``--faces`` is animated by every prepared training
clip — the clip's tracked lip shapes (the bundle's lip units, z-scored per clip as in
training) drive the bundle's generator on the portrait's own aligned crop (pose and identity
reference), frame by frame, and the shard keeps the clip's audio, frame times and landmarks.
So the mouth moves with the real audio exactly as the driving speaker's did, on a face the
expert has never seen; the head is still (the expert's similarity augmentation moves it).

``--speech`` (repeatable: audio files, folders of them, or folders of training.tts_data
shards) drives the portraits with *speech* instead: the voices the expert trains on are
otherwise the few of the training clips. Every source is cut into ``--chunk``-second pieces
(a TTS shard's scenes each hold one voice), the bundle's audio-to-lip stage turns each piece
into lip units at 25 fps exactly as a dub does (rtdub.drive.audio.AudioStage at the bundle's
largest lookahead: same windows, silence rule and smoothing), z-scored over the piece (a
regression's output moves half as much as tracked lips do), and ``--faces-per-piece``
portraits, taken in turn, are animated by them. The mouth then moves as the audio-to-lip
stage says, which is right in time by construction but smoother than real speech; the
shard's lip landmarks, from which train_sync's lip targets come, are the units mapped back
through the bundle's PCA basis (de-z-scored with the training clips' mean statistics).

One shard per (portrait, clip) pair, ``OUT/synth_<face>__<clip>.npz``, in the format of
training/prepare.py (crops, canon, times, valid, wav, fps), written atomically; existing
shards are skipped. The shards hold pixels made from the portraits and the clips' audio:
keep them out of any repository (``data2/`` is ignored).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from rtdub import audio, media
from rtdub.backends.base import BackendConfig
from rtdub.backends.onnx import OnnxBackend
from rtdub.drive.audio import AudioDriveConfig, AudioStage
from rtdub.exceptions import InputError, ModelError
from rtdub.face import align
from rtdub.face.lipunits import LIP_IDX, LipBasis, UnitStats, to_canonical
from rtdub.face.tracker import FaceTracker
from rtdub.model import ModelBundle, load_bundle
from rtdub.render.blend import face_mask

from .data import Clip, attach_units, context_units, load_clip, synth_name

logger = logging.getLogger("training.synth_talk")

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


SPEECH_FPS = 25.0
AUDIO_EXT = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".aac"}


@dataclass(frozen=True)
class Portrait:
    crop: np.ndarray  # (S, S, 3) uint8, aligned
    canon: np.ndarray  # (468, 2) canonical landmarks of the still face


@dataclass(frozen=True)
class Speech:
    name: str
    wav: np.ndarray  # float32, rtdub.audio.SAMPLE_RATE


def portrait(path: Path, size: int) -> Portrait:
    """The aligned (size, size, 3) RGB face crop of a still portrait and its landmarks."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(str(path), "not a readable image")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with FaceTracker() as tracker:
        obs = tracker.track(image, 0.0)
    if obs is None:
        raise InputError(str(path), "no face found")
    crop = align.warp_to_crop(image, align.estimate(obs.landmarks, size))
    return Portrait(crop, to_canonical(obs.landmarks).astype(np.float32))


def speech_pieces(sources: list[Path], exclude: list[str], chunk: float) -> list[Speech]:
    """Every source cut into pieces of at most ``chunk`` s (the last piece of a source is kept
    when it is at least half that). A folder holding ``tts_*.npz`` shards is cut at its
    scenes' starts first, so that a piece holds one voice."""
    sr = audio.SAMPLE_RATE
    pieces: list[Speech] = []

    def cut(name: str, wav: np.ndarray) -> None:
        n = int(chunk * sr)
        for k, s in enumerate(range(0, len(wav), n)):
            part = wav[s : s + n]
            if len(part) >= n // 2:
                pieces.append(Speech(f"{name}_{k}", np.ascontiguousarray(part, np.float32)))

    for src in sources:
        files = sorted(src.iterdir()) if src.is_dir() else [src]
        for f in files:
            if any(fnmatch.fnmatch(f.name, g) for g in exclude) or f.name.endswith(".part.npz"):
                continue
            if f.suffix == ".npz":
                with np.load(f) as z:
                    wav = z["wav"].astype(np.float32) / 32767
                    scenes = json.loads(str(z["scenes"])) if "scenes" in z.files else [{"start": 0.0}]
                bounds = [int(float(sc["start"]) * sr) for sc in scenes] + [len(wav)]
                for i in range(len(scenes)):
                    cut(f"{f.stem}_s{i}", wav[bounds[i] : bounds[i + 1]])
            elif f.suffix.lower() in AUDIO_EXT:
                cut(f.stem, media.load_audio(f))
    return pieces


def speech_clip(piece: Speech, stage: AudioStage) -> Clip:
    """A clip of ``piece``'s duration at 25 fps whose units are the audio-to-lip stage's,
    z-scored over the piece; no pixels yet."""
    mel = audio.melspectrogram(audio.normalize_loudness(piece.wav))
    n = int(len(piece.wav) / audio.SAMPLE_RATE * SPEECH_FPS)
    times = np.arange(n) / SPEECH_FPS
    source = audio.StaticMel(mel)
    stage.reset()
    units = np.stack([stage.units_at(source, float(t))[0] for t in times])
    # a regression's output moves about half as much as tracked lips (its variance shrinks
    # towards the mean): z-score it over the piece, as tracked units are over their clip
    units = ((units - units.mean(0)) / np.maximum(units.std(0), 1e-3)).astype(np.float32)
    return Clip(
        name=piece.name,
        crops=np.zeros((0, 1, 1, 3), np.uint8),
        lips=np.zeros((n, len(LIP_IDX), 2), np.float32),
        times=times,
        valid=np.ones(n, bool),
        mel=mel,
        wav=piece.wav,
        fps=SPEECH_FPS,
        units=units,
    )


def units_to_canon(units: np.ndarray, basis: LipBasis, stats: UnitStats, still: np.ndarray) -> np.ndarray:
    """(N, 468, 2) canonical landmarks: the portrait's, with the lip points replaced by the
    shapes the (z-scored) units describe through the PCA basis, placed at the portrait's
    lip centroid. The inner-gap unit is not used (the shape carries the opening too)."""
    raw = units * stats.std + stats.mean
    coeffs = raw[:, : basis.components.shape[0]]
    shapes = (basis.mean + coeffs @ basis.components).reshape(len(units), len(LIP_IDX), 2)
    canon = np.repeat(still[None], len(units), axis=0)
    canon[:, LIP_IDX] = shapes + still[LIP_IDX].mean(axis=0)
    return canon.astype(np.float32)


def training_stats(clips: list[Clip], basis: LipBasis) -> UnitStats:
    """The mean of the clips' per-clip unit statistics: a typical speaker's scale."""
    attach_units(clips, basis)
    stats = [c.stats for c in clips if c.stats is not None]
    if not stats:
        raise InputError("training clips", "no clip with tracked lips to take unit statistics from")
    return UnitStats(np.mean([s.mean for s in stats], 0), np.mean([s.std for s in stats], 0))


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
    p.add_argument(
        "--speech",
        type=Path,
        action="append",
        default=[],
        help="drive with speech instead (audio files, folders, TTS shard folders; repeatable); "
        "--data then only gives the lip units' typical scale",
    )
    p.add_argument("--chunk", type=float, default=10.0, help="--speech: seconds per piece")
    p.add_argument("--faces-per-piece", type=int, default=2, help="--speech: portraits each piece animates")
    p.add_argument("--faces", type=Path, required=True, help="folder of portraits")
    p.add_argument("--bundle", type=Path, default=Path("engines/hq"), help="model bundle whose generator animates")
    p.add_argument("--out", type=Path, default=Path("data2/synth"))
    p.add_argument(
        "--exclude", action="append", default=[], help="clips or speech files to leave out (glob, repeatable)"
    )
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.chunk <= 0 or args.faces_per_piece < 1:
            raise InputError("arguments", "--chunk must be > 0 and --faces-per-piece >= 1")
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
        for src in args.speech:
            if not src.exists():
                raise InputError(str(src), "no such file or folder")
    except (InputError, ModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(bundle.generator_path), opts, providers=["CPUExecutionProvider"])
    args.out.mkdir(parents=True, exist_ok=True)
    stills: dict[str, Portrait] = {}
    for f in faces:
        try:
            stills[f.stem] = portrait(f, bundle.crop_size)
        except InputError as exc:
            logger.warning("skipped: %s", exc)
    if not stills:
        print(f"error: {args.faces}: no portrait with a face", file=sys.stderr)
        return 2
    if args.speech:
        return _drive_with_speech(args, bundle, session, stills, sources)
    for src in sources:
        todo = {n: args.out / f"{synth_name(n, src.stem)}.npz" for n in stills}
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
            write_shard(dst, animate(session, stills[name].crop, clip, bundle), kept)
            logger.info("%s: %d frames", dst.name, int(clip.valid.sum()))
    return 0


def _drive_with_speech(
    args: argparse.Namespace,
    bundle: ModelBundle,
    session: ort.InferenceSession,
    stills: dict[str, Portrait],
    sources: list[Path],
) -> int:
    pieces = speech_pieces(args.speech, args.exclude, args.chunk)
    if not pieces:
        print("error: --speech: no audio left to drive with", file=sys.stderr)
        return 2
    try:
        stats = training_stats([load_clip(f) for f in sources], bundle.basis)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    la = bundle.max_lookahead * 1000
    backend = OnnxBackend(bundle, BackendConfig(threads=args.threads))
    stage = AudioStage(bundle, backend, AudioDriveConfig(lookahead_ms=la))
    names = sorted(stills)
    for k, piece in enumerate(pieces):
        per = min(args.faces_per_piece, len(names))
        chosen = [names[(k * per + j) % len(names)] for j in range(per)]
        todo = {n: args.out / f"{synth_name(n, 'speech_' + piece.name)}.npz" for n in chosen}
        todo = {n: dst for n, dst in todo.items() if not dst.exists()}
        if not todo:
            continue
        clip = speech_clip(piece, stage)
        assert clip.units is not None
        for name, dst in todo.items():
            kept = {
                "canon": units_to_canon(clip.units, bundle.basis, stats, stills[name].canon),
                "times": clip.times,
                "valid": clip.valid,
                "wav": clip.wav,
                "fps": np.asarray(clip.fps, np.float64),
            }
            write_shard(dst, animate(session, stills[name].crop, clip, bundle), kept)
            logger.info("%s: %d frames", dst.name, len(clip.times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
