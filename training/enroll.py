"""Enrolment: a person-specific model bundle from a few minutes of their own video, on a CPU
(a library module; ``rtdub enroll`` is its command line, benchmarks/enroll_eval.py measures it).

    footage ─► track (training/shards.py) ─► usable-footage checks ─► split: the first 70 % of
    each recording trains, the last 30 % is held back ─► the person's unit statistics and
    reference bank (training/enroll_data.py) ─► fine-tune the base bundle's generator, whose
    torch weights come back from its ONNX (engines/onnx_weights.py) ─► export a bundle
    (engines/onnx_export.py) ─► score base and enrolled bundles on the held-back tail
    (rtdub.measure.evaluation) ─► the bundle appears at its path in one rename

The fine-tune is train_gen's self-supervised recipe (training/generator.py: masked pose of
frame t, a reference of the same person, the true units of t-4..t, the crop of t as target;
L1 towards the mouth, gradient L1, the focal frequency loss of the mouth box, and train_gen's
copy term, mean 1 - alpha over the mouth mask), on this person only, from the base generator,
with BatchNorm frozen. Half of the references are the bank's own crops (what the runtime will
feed), half other frames at least 1 s away (the generic recipe). By default only the
conditioning learns (``trainable="conditioning"``: the units MLP and the FiLM layers, 0.12 M of
the 0.89 M weights): how this person's units move the mouth, while the image path (what to warp,
what to paint) stays the generic one. Training every weight (``"all"``) fits the held-back crops
better but, on one person's few minutes, learns to paint the mouth with the generator's blurred
48 px colour (without the copy term: mixing weight 0.95 -> 0.78, teeth contrast 0.88 -> 0.35 of
the original's) or, with it, to stretch the reference with strong flows (lips smeared into a
line on a 720p recording after 1168 steps); runs/enroll_exp has the pictures. The budget is
wall-clock minutes: the learning rate follows a cosine over the elapsed share of the budget (or
over ``steps`` when a fixed count is asked for).

Interrupted runs resume: the work (tracked shards, the bank, a checkpoint every minute) lives
in ``.<name>.enroll`` beside the output, keyed by the sources' hashes, the base bundle and the
recipe; the same command picks it up. Only the finished bundle is renamed to the output, and
the work folder (it holds crops of every frame) is deleted once it is. The bundle holds no
frames of the footage beyond the reference crops its manifest lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from engines.onnx_export import export_onnx, parity_outputs
from engines.onnx_weights import freeze_batchnorm, generator_from_bundle
from rtdub import audio, media
from rtdub.backends import BackendConfig, get_backend
from rtdub.defaults import DEFAULT_LOOKAHEAD_MS
from rtdub.exceptions import InputError
from rtdub.face.lipunits import LipBasis
from rtdub.measure.evaluation import ClipData, reconstruct, track_frames
from rtdub.model import ModelBundle, bundle_dir, load_bundle
from rtdub.render.blend import face_mask
from rtdub.render.reference import ReferenceConfig

from . import gen_losses
from .common import load_checkpoint, save_checkpoint
from .data import Clip, reference_index
from .enroll_data import (
    MIN_FACE_PX,
    MIN_SECONDS,
    RECOMMENDED_SECONDS,
    BankPick,
    PersonClip,
    PersonUnits,
    Source,
    attach_person_units,
    check_footage,
    choose_bank,
    file_sha256,
    hires_crops,
    load_person_clip,
    prepare_source,
)
from .generator import face_loss, make_batch, mouth_box
from .models import LipToFace

logger = logging.getLogger(__name__)

FORMAT = "rtdub-enrolment/1"
WORK_VERSION = 1  # bumped when the work folder's layout changes (old work is then discarded)
PARITY_LIMIT = 1e-3  # torch vs onnxruntime, max abs over the face and fields
# the parameters a fine-tune changes, by name prefix ("" = all)
TRAINABLE = {"all": ("",), "conditioning": ("units_mlp.", "film.")}


@dataclass(frozen=True)
class EnrollConfig:
    minutes: float = 5.0  # fine-tuning budget, wall-clock minutes
    steps: int = 0  # > 0: exactly this many steps instead (the schedule follows the steps)
    batch: int = 16
    lr: float = 1e-4
    bank_share: float = 0.5  # share of the samples whose reference is a bank crop
    freq_weight: float = 10.0  # focal frequency loss on the mouth box (training/gen_losses.py)
    alpha_weight: float = 1.0  # mean(1 - alpha) over the mouth mask: warp the reference, paint less
    trainable: str = "conditioning"  # only the units MLP and the FiLM layers; "all": every weight
    test_fraction: float = 0.3  # the end of each recording held back to measure the model
    eval_seconds: float = 12.0  # of the held-back tail scored, in all (0: no scoring)
    eval_height: int = 480  # frames scaled down to this height for scoring
    threads: int = 2
    seed: int = 0
    checkpoint_every: float = 60.0  # s
    min_face_px: float = MIN_FACE_PX
    min_seconds: float = MIN_SECONDS  # of usable training face: below, refused
    recommended_seconds: float = RECOMMENDED_SECONDS  # below, a warning
    lookahead_ms: float = DEFAULT_LOOKAHEAD_MS

    def __post_init__(self) -> None:
        if self.steps <= 0 and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 0.0 <= self.bank_share <= 1.0:
            raise ValueError(f"bank_share must be in [0, 1], got {self.bank_share}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {sorted(TRAINABLE)}, got {self.trainable!r}")

    def recipe(self) -> dict[str, Any]:
        """What decides the trained weights (the work folder's key; the manifest's recipe)."""
        keys = (
            *("minutes", "steps", "batch", "lr", "bank_share", "freq_weight", "alpha_weight", "trainable"),
            *("test_fraction", "seed", "min_face_px"),
        )
        return {k: getattr(self, k) for k in keys}


class Progress(Protocol):
    """Where enrolment reports its stages (the command line draws bars with an ETA)."""

    def start(self, stage: str, total: float, unit: str) -> None: ...

    def advance(self, done: float, info: str = "") -> None: ...

    def finish(self) -> None: ...


class LogProgress:
    """Progress as log lines (INFO), about every 10 % of a stage."""

    def __init__(self) -> None:
        self._stage, self._total, self._next = "", 1.0, 0.0

    def start(self, stage: str, total: float, unit: str) -> None:
        self._stage, self._total, self._next = stage, max(total, 1e-9), 0.1
        logger.info("%s: %.0f %s", stage, total, unit)

    def advance(self, done: float, info: str = "") -> None:
        if done / self._total >= self._next:
            logger.info("%s %.0f %% %s", self._stage, 100 * done / self._total, info)
            self._next += 0.1

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class EnrollResult:
    output: Path
    manifest: dict[str, Any]
    warnings: tuple[str, ...]
    seconds: float


# --- the work folder ----------------------------------------------------------------------------


def work_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.enroll"


def _work_key(sources: Sequence[Source], hashes: Sequence[str], base: Path, cfg: EnrollConfig) -> str:
    gen_hash = file_sha256(base / json.loads((base / "manifest.json").read_text())["generator"]["file"])
    key = {
        "version": WORK_VERSION,
        "sources": [[h, s.train_until] for s, h in zip(sources, hashes, strict=True)],
        "base": gen_hash,
        "recipe": cfg.recipe(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _open_work(work: Path, key: str) -> None:
    """Keep ``work`` when it was made for ``key`` (resume), else start it afresh."""
    key_file = work / "key.txt"
    if work.exists() and not (key_file.is_file() and key_file.read_text().strip() == key):
        logger.warning("%s: work of another enrolment (other videos, base or recipe): starting over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not key_file.is_file():
        key_file.write_text(key + "\n")


def check_output(output: Path) -> None:
    """An output path enrolment may write: new, empty, or a bundle it wrote before (replaced)."""
    if not output.exists():
        return
    if not output.is_dir():
        raise InputError(str(output), "exists and is not a folder")
    mf = output / "manifest.json"
    if mf.is_file():
        try:
            if "enrolment" in json.loads(mf.read_text()):
                return
        except (OSError, json.JSONDecodeError):
            pass
    if any(output.iterdir()):
        raise InputError(str(output), "exists and is not an enrolled bundle: give a new folder")


# --- checkpoints ---------------------------------------------------------------------------------


def _save(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Write a checkpoint folder whole, then swap it in (an interruption leaves the old one)."""
    new, old = ckpt.with_name(ckpt.name + ".new"), ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    save_checkpoint(new, model, opt, meta)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(new, ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _load(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
    old = ckpt.with_name(ckpt.name + ".old")
    if not (ckpt / "meta.json").is_file() and (old / "meta.json").is_file():
        os.replace(old, ckpt)  # interrupted between the two renames of _save
    return load_checkpoint(ckpt, model, opt) if (ckpt / "meta.json").is_file() else None


# --- fine-tuning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BankCrop:
    clip: int
    time: float
    crop: np.ndarray  # (S, S, 3) uint8


@dataclass(frozen=True)
class FinetuneResult:
    steps: int
    seconds: float
    loss_first: float  # mean loss of the first 20 steps
    loss_last: float  # of the last 20
    history: tuple[tuple[int, float], ...] = field(default=())  # (step, mean loss of 20 steps)


def finetune(
    model: LipToFace,
    clips: list[Clip],
    bank: Sequence[BankCrop],
    cfg: EnrollConfig,
    ckpt: Path,
    progress: Progress,
) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``clips`` (their ``valid`` frames; units attached),
    resuming from ``ckpt`` and checkpointing there (module docstring)."""
    torch.set_num_threads(max(1, cfg.threads))
    params = []
    for name, prm in model.named_parameters():
        prm.requires_grad_(name.startswith(TRAINABLE[cfg.trainable]))
        if prm.requires_grad:
            params.append(prm)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.5, 0.999))
    meta = _load(ckpt, model, opt) or {}
    step = int(meta.get("step", 0))
    elapsed = float(meta.get("seconds", 0.0))
    history: list[tuple[int, float]] = [(int(a), float(b)) for a, b in meta.get("history", [])]
    if step:
        logger.info("resuming the fine-tune at step %d (%.0f s trained)", step, elapsed)
    budget = cfg.minutes * 60.0
    by_steps = cfg.steps > 0
    size = model.cfg.size
    soft = torch.from_numpy(face_mask(size).soft.copy())[None, None]
    wmap = 1.0 + 4.0 * soft
    weights = np.array([c.valid.sum() for c in clips], np.float64)
    weights /= weights.sum()
    index = {id(c): k for k, c in enumerate(clips)}
    rng = np.random.default_rng([cfg.seed, step])
    torch.manual_seed(cfg.seed * 100003 + step)

    def pick(c: Clip, i: int, r: np.random.Generator) -> np.ndarray:
        if bank and r.random() < cfg.bank_share:
            k = index[id(c)]
            ok = [b for b in bank if b.clip != k or abs(b.time - float(c.times[i])) >= 1.0]
            if ok:
                return ok[int(r.integers(len(ok)))].crop
        return c.crops[reference_index(c, i, r)]

    def done() -> float:
        return step / cfg.steps if by_steps else elapsed / budget

    logger.info(
        "fine-tune: from step %d, %s, batch %d, %d training frames",
        step,
        f"{cfg.steps} steps" if by_steps else f"{budget:.0f} s",
        cfg.batch,
        int(sum(c.valid.sum() for c in clips)),
    )
    progress.start("fine-tune", float(cfg.steps) if by_steps else budget, "steps" if by_steps else "s")
    progress.advance(step if by_steps else elapsed)
    window: list[float] = []
    last_save = time.monotonic()
    model.train()
    freeze_batchnorm(model)
    try:
        while done() < 1.0:
            t0 = time.monotonic()
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done())))
            for g in opt.param_groups:
                g["lr"] = lr
            pose, ref, units, tgt = make_batch(clips, weights, cfg.batch, model.cfg, rng, pick_reference=pick)
            fields = model.fields(pose, ref, units)
            out = model.compose(ref, fields)
            loss = face_loss(out, tgt, wmap, soft)
            if cfg.freq_weight > 0:
                loss = loss + cfg.freq_weight * gen_losses.focal_frequency_loss(
                    mouth_box(out, size), mouth_box(tgt, size)
                )
            if cfg.alpha_weight > 0:
                loss = loss + cfg.alpha_weight * ((1 - model.alpha(fields)) * soft).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            elapsed += time.monotonic() - t0
            window.append(float(loss.item()))
            logger.debug("fine-tune step %d loss %.4f lr %.2e", step, window[-1], lr)
            if len(window) == 20:
                history.append((step, float(np.mean(window))))
                window = []
            progress.advance(step if by_steps else min(elapsed, budget), f"step {step} loss {loss.item():.4f}")
            if time.monotonic() - last_save >= cfg.checkpoint_every:
                _save(ckpt, model, opt, {"step": step, "seconds": elapsed, "history": history})
                last_save = time.monotonic()
    except KeyboardInterrupt:
        _save(ckpt, model, opt, {"step": step, "seconds": elapsed, "history": history})
        logger.warning("fine-tune interrupted at step %d: checkpoint saved", step)
        raise
    if window:
        history.append((step, float(np.mean(window))))
    _save(ckpt, model, opt, {"step": step, "seconds": elapsed, "history": history, "finished": True})
    progress.finish()
    model.eval()
    first = history[0][1] if history else float("nan")
    last = history[-1][1] if history else float("nan")
    logger.info("fine-tune: %d steps in %.0f s, loss %.4f -> %.4f", step, elapsed, first, last)
    return FinetuneResult(step, elapsed, first, last, tuple(history))


# --- the held-back tail ---------------------------------------------------------------------------


def tail_clip(pc: PersonClip, units: PersonUnits, basis: LipBasis, seconds: float, height: int) -> ClipData | None:
    """The first ``seconds`` of ``pc``'s held-back part as evaluation data (frames at most
    ``height`` high, times from 0), its true units z-scored with the person's statistics;
    None when nothing is held back."""
    if not pc.test.any() or seconds <= 0:
        return None
    c = pc.clip
    start = int(np.nonzero(c.times >= c.times[np.nonzero(pc.test)[0][0]])[0][0])
    t0 = float(c.times[start])
    frames: list[np.ndarray] = []
    times: list[float] = []
    for i, fr in enumerate(media.iter_frames(pc.source.path)):
        if i < start:
            continue
        if fr.time - t0 >= seconds:
            break
        img = fr.image
        if img.shape[0] > height:
            w = max(2, round(img.shape[1] * height / img.shape[0] / 2) * 2)
            img = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
        frames.append(img)
        times.append(fr.time - t0)
    if len(frames) < 10:
        return None
    t = np.asarray(times)
    wav = c.wav[int(t0 * audio.SAMPLE_RATE) :] if c.has_audio else np.zeros(0, np.float32)
    mel = audio.StaticMel(
        audio.melspectrogram(audio.normalize_loudness(wav))
        if wav.size > audio.SAMPLE_RATE // 10
        else np.full((len(frames) * 4 + 100, audio.N_MELS), -4.0, np.float32)
    )
    truth = track_frames(frames, t)
    ok = np.isfinite(truth.gap)
    true_units = np.tile(units.closed, (len(frames), 1)).astype(np.float32)
    if ok.any():
        true_units[ok] = units.stats.normalize(basis.raw_units(truth.lips[ok]))
    return ClipData(f"{pc.source.path.stem}_tail", tuple(frames), t, float(c.fps), mel, truth, true_units)


def score(
    tails: Sequence[tuple[ClipData, bool]],
    bundle: ModelBundle,
    modes: Sequence[str],
    cfg: EnrollConfig,
    reference: ReferenceConfig | None = None,
) -> dict[str, dict[str, float]]:
    """``bundle`` on every tail in each mode (rtdub.measure.evaluation.reconstruct; ``reference``:
    the choice of identity reference, the pipeline's default when None), the scores averaged
    over the tails weighted by their scored frames; the "model" mode (audio-driven) only on
    tails with audio (``tails``: (data, has audio))."""
    backend = get_backend("onnx", bundle, BackendConfig(threads=cfg.threads))
    out: dict[str, dict[str, float]] = {}
    try:
        for mode in modes:
            rows = [
                reconstruct(d, mode, bundle, backend, cfg.lookahead_ms, reference=reference).scores
                for d, has_audio in tails
                if mode != "model" or has_audio
            ]
            if not rows:
                continue
            w = np.array([max(r["frames"], 0) for r in rows], np.float64)
            agg: dict[str, float] = {}
            for k in ("LMD", "MOC", "PSNR", "SSIM", "sharpness", "interior"):
                v = np.array([r[k] for r in rows], np.float64)
                ok = np.isfinite(v) & (w > 0)
                agg[k] = float(np.average(v[ok], weights=w[ok])) if ok.any() else float("nan")
            agg["frames"] = float(w.sum())
            out[mode] = agg
    finally:
        backend.close()
    return out


# --- the bundle ---------------------------------------------------------------------------------------


def write_bundle(
    dst: Path,
    base: Path,
    model: LipToFace,
    picks: Sequence[BankPick],
    crops: dict[str, np.ndarray],
    large: dict[str, np.ndarray],
    person: PersonUnits,
    enrolment: dict[str, Any],
    name: str,
) -> dict[str, Any]:
    """Write the enrolled bundle into the empty folder ``dst``: the fine-tuned generator, the
    base's audio stage (and phonetic model), the reference crops, the manifest."""
    dst.mkdir(parents=True)
    base_m = json.loads((base / "manifest.json").read_text())
    model.eval()
    export_onnx(model, dst / "generator.onnx", None)
    par = parity_outputs(model, dst / "generator.onnx", 3)
    if max(par.values()) > PARITY_LIMIT:
        raise RuntimeError(f"exported generator differs from torch by {par}")
    for key in ("file", "baseline"):  # the audio drive (and, for a fused one, its base model)
        if base_m["a2l"].get(key):
            shutil.copy2(base / base_m["a2l"][key], dst / base_m["a2l"][key])
    if isinstance(base_m.get("phonetic"), dict):
        shutil.copy2(base / base_m["phonetic"]["file"], dst / base_m["phonetic"]["file"])
    (dst / "references").mkdir()
    refs = []
    for p in picks:
        entry: dict[str, Any] = {"name": p.name, "file": f"references/{p.name}.png"}
        _write_png(dst / entry["file"], crops[p.name])
        if p.name in large:
            entry["hires"] = f"references/{p.name}_{large[p.name].shape[0]}.png"
            _write_png(dst / entry["hires"], large[p.name])
        entry |= {"gap": round(p.gap, 4), "yaw": round(p.yaw, 4), "units": [round(u, 4) for u in p.units]}
        entry["source"] = {"recording": p.clip, "frame": p.frame, "time_s": round(p.time, 3)}
        refs.append(entry)
    manifest = dict(base_m)
    manifest["name"] = name
    manifest["generator"] = dict(base_m["generator"]) | {"file": "generator.onnx"}
    manifest["units"] = dict(base_m["units"]) | {"closed": [float(x) for x in person.closed]}
    manifest["parity_max_abs"] = {"generator": par["face"], "generator_fields": par["fields"]}
    manifest["training"] = {"generator": "rtdub enroll (manifest enrolment)", "a2l": "the base bundle's"}
    manifest.pop("previous_generator", None)
    manifest["references"] = refs
    manifest["enrolment"] = enrolment
    _write_manifest(dst, manifest)
    return manifest


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"{path}: could not write the image")


def _write_manifest(dst: Path, manifest: dict[str, Any]) -> None:
    tmp = dst / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, dst / "manifest.json")


def _publish(bundle: Path, output: Path, work: Path) -> None:
    """Put the finished ``bundle`` at ``output`` by renames (an old enrolled bundle there is
    replaced), then delete the work folder."""
    output.parent.mkdir(parents=True, exist_ok=True)
    old = work / "replaced"
    if output.exists():
        os.replace(output, old)
    os.replace(bundle, output)
    shutil.rmtree(work, ignore_errors=True)


# --- the whole enrolment ----------------------------------------------------------------------------


def enroll(
    sources: Sequence[Source],
    output: Path,
    base: str | Path | None = None,
    cfg: EnrollConfig | None = None,
    progress: Progress | None = None,
) -> EnrollResult:
    """Enrol the person in ``sources`` into a bundle at ``output`` (module docstring); raises
    FootageError (an InputError) for too little usable face, InputError for bad paths."""
    cfg = cfg or EnrollConfig()
    progress = progress or LogProgress()
    t_start = time.monotonic()
    base_dir = bundle_dir(base)
    base_bundle = load_bundle(base_dir)
    if base_bundle.references:
        raise InputError(str(base_dir), "is an enrolled bundle; enrol from a generic one (e.g. default)")
    check_output(output)
    for s in sources:
        media.probe_video(s.path)  # InputError for a missing or unreadable file
    progress.start("hash", len(sources), "files")
    hashes = []
    for k, s in enumerate(sources):
        hashes.append(file_sha256(s.path))
        progress.advance(k + 1)
    progress.finish()
    work = work_dir(output)
    _open_work(work, _work_key(sources, hashes, base_dir, cfg))

    # track
    infos = [media.probe_video(s.path) for s in sources]
    total = sum(max(i.n_frames, int(i.duration * float(i.fps))) for i in infos)
    progress.start("track", float(total), "frames")
    done = 0
    prepared = []
    for k, s in enumerate(sources):
        offset = done

        def tick(i: int, offset: int = offset) -> None:
            progress.advance(offset + i + 1)

        prepared.append(prepare_source(s.path, work / f"v{k}.npz", base_bundle.crop_size, tick))
        z = np.load(prepared[-1].shard)
        done += len(z["times"])
        progress.advance(done)
    progress.finish()
    clips = [load_person_clip(s, p, cfg.min_face_px) for s, p in zip(sources, prepared, strict=True)]
    for pc in clips:
        logger.info("%s: %s", pc.source.path.name, pc.report.to_dict())
    warnings = check_footage(clips, cfg.min_seconds, cfg.recommended_seconds, cfg.min_face_px)
    for w in warnings:
        logger.warning("%s", w)

    # the person's units and references
    person = attach_person_units(clips, base_bundle.basis)
    canon = [np.load(p.shard)["canon"] for p in prepared]
    picks = choose_bank(clips, canon)
    crops = {p.name: clips[p.clip].clip.crops[p.frame] for p in picks}
    bank_file = work / "bank.npz"
    if bank_file.is_file():
        z = np.load(bank_file)
        large = {p.name: z[p.name] for p in picks if p.name in z}
    else:
        large = hires_crops(clips, picks)
        np.savez(work / "bank.part.npz", **large)
        os.replace(work / "bank.part.npz", bank_file)

    # fine-tune
    model, recovery = generator_from_bundle(base_dir)
    train_clips = []
    for pc in clips:
        c = dataclasses.replace(pc.clip, valid=pc.train.copy())
        if c.valid.sum() > 0:
            train_clips.append(c)
    bank = [BankCrop(p.clip, p.time, crops[p.name]) for p in picks]
    # bank entries index ``clips``; the training list drops clips without training frames
    kept = [k for k, pc in enumerate(clips) if pc.train.any()]
    bank = [dataclasses.replace(b, clip=kept.index(b.clip)) for b in bank if b.clip in kept]
    ft = finetune(model, train_clips, bank, cfg, work / "checkpoint", progress)

    # the bundle, then its scores on the held-back tail
    bundle_tmp = work / "bundle"
    shutil.rmtree(bundle_tmp, ignore_errors=True)
    enrolment: dict[str, Any] = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": [
            pc.report.to_dict()
            | {
                "sha256": h,
                "train_until": pc.source.train_until,
                "train_s": round(float(pc.train.sum()) / pc.clip.fps, 2),
                "test_s": round(float(pc.test.sum()) / pc.clip.fps, 2),
                "fps": round(pc.clip.fps, 3),
            }
            for pc, h in zip(clips, hashes, strict=True)
        ],
        "base": {
            "path": str(base_dir),
            "name": base_bundle.info.get("name"),
            "generator_sha256": file_sha256(base_bundle.generator_path),
            "weights_recovered": recovery.summary(),
        },
        "recipe": cfg.recipe() | {"steps_done": ft.steps, "train_seconds": round(ft.seconds, 1)},
        "loss": {"first": ft.loss_first, "last": ft.loss_last},
        "person": {"unit_stats": person.to_dict(), "basis": "the base bundle's (manifest units)"},
        "privacy": "no frames of the footage beyond the reference crops listed in 'references'",
        "warnings": warnings,
    }
    name = f"rtdub-enrolled-{output.name}"
    manifest = write_bundle(bundle_tmp, base_dir, model, picks, crops, large, person, enrolment, name)
    if cfg.eval_seconds > 0:
        enrolment["metrics"] = evaluate_tail(clips, person, base_bundle, bundle_tmp, cfg, progress)
        manifest["enrolment"] = enrolment
        _write_manifest(bundle_tmp, manifest)
    load_bundle(bundle_tmp)  # it loads as any bundle does
    _publish(bundle_tmp, output, work)
    seconds = time.monotonic() - t_start
    logger.info("enrolled %s in %.0f s", output, seconds)
    return EnrollResult(output, manifest, tuple(warnings), seconds)


def evaluate_tail(
    clips: Sequence[PersonClip],
    person: PersonUnits,
    base: ModelBundle,
    enrolled_dir: Path,
    cfg: EnrollConfig,
    progress: Progress,
) -> dict[str, Any]:
    """Base and enrolled bundle on the same held-back frames, driven by the true units and by
    the recordings' own audio."""
    with_tail = [pc for pc in clips if pc.test.any()]
    if not with_tail:
        return {"skipped": "nothing held back (test_fraction 0)"}
    per = cfg.eval_seconds / len(with_tail)
    tails = []
    progress.start("score", 4.0, "renders")
    for pc in with_tail:
        d = tail_clip(pc, person, base.basis, per, cfg.eval_height)
        if d is not None:
            tails.append((d, pc.clip.has_audio))
    if not tails:
        return {"skipped": "held-back tails too short"}
    enrolled = load_bundle(enrolled_dir)
    res: dict[str, Any] = {"seconds": round(sum(float(d.times[-1]) for d, _ in tails), 2)}
    for k, (label, b) in enumerate((("before", base), ("after", enrolled))):
        res[label] = score(tails, b, ("true-units", "model"), cfg)
        progress.advance(2.0 * (k + 1))
    progress.finish()
    res["drives"] = {"true-units": "the held-back frames' own lip units", "model": "their own audio"}
    return res
