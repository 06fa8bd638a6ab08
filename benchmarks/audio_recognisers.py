"""Audio-only lip drives compared on real people, leaving one identity out (issue 18, item 2).

    python -m benchmarks.audio_recognisers --recogniser runs/recog/pre_phones --data data/train \
        --offsets runs/offsets_train.json --exclude '*social_d12*' --exclude '*social_d14*' \
        --exclude '*social_d6*' [--recogniser runs/recog/pre_phones_s1 ...] [--out benchmarks/results]

Every candidate predicts the bundle's z-scored lip units of each frame of the prepared real clips
(training.prepare; each clip's measured audio lag taken out) from the clip's own audio; the score
is the unit-level mouth-opening correlation (MOC: Pearson of the predicted and true inner-gap unit
over an identity's frames). Candidates:

    default        the bundle's audio-to-lip model as the runtime runs it (lookahead 40 ms)
    mel-ridge      ridge regression on per-clip-normalised log-mel, 20 bands x 0.12 s before to
                   0.04 s after the frame (a linear acoustic baseline)
    phone-loop     pocketsphinx's bundled en-us acoustic model in phone-loop mode (allphone, the
                   bundled phone language model), its phones as visual classes through the phonetic
                   drive's features (rtdub/drive/phonetic.py: occupancy 0.12 s before to 0.1 s after,
                   loudness) and a ridge map. Decoded over the whole clip: NOT causal
    words+align    pocketsphinx words, then forced alignment (training.asr_phones' labels): the
                   phones a recogniser with a language model finds; NOT causal either
    recogniser     the viseme recogniser (training.pretrain_a2l --task phones: espeak voices and
                   other generators' audio only) at the frame, lookahead 40 ms: causal; one row per
                   --recogniser run (seeds), and with several, their mapped units averaged
                   (recogniser-mean)
    X + default    X's units and the default's, mixed half and half (the fused drive's rule)

Every ridge map is fitted on the other identities (alpha 100, the value training.train_visemes
chose on its own leave-one-out); the recogniser and pocketsphinx never heard any of these people.
"default" was trained on KristiNoem, Obama and andrew: on those it is scored on its own training
data, so the "unseen" mean is over the other identities only. Also measured: the cost of each
recogniser on this host (ms of compute per video frame at 25 fps).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engines.onnx_export import load_a2l
from rtdub import atomic
from rtdub.drive.events import timeline
from rtdub.drive.phones import espeak_class
from rtdub.drive.phonetic import PhoneticConfig, features, fit_ridge, loudness_db
from training.common import corr
from training.data import apply_audio_offsets, attach_units, identity, load_basis, load_dir, offset_records
from training.phones import asr_timeline, load_shards
from training.recogniser import Recogniser
from training.visemes import EXCLUDE, Sample, class_logp, design, runtime_units

GAP = -1
ALPHA = 100.0
TRAINED_ON = ("KristiNoem", "Obama", "andrew")  # the default audio-to-lip model's identities
PHONETIC = PhoneticConfig(bin_s=0.02, past_s=0.12, future_s=0.1, loudness=True)
FPS = 25.0


def mel_features(s: Sample, past: float = 0.12, future: float = 0.04, bands: int = 20) -> np.ndarray:
    mel = s.clip.mel.astype(np.float64)
    mel = (mel - mel.mean(0)) / (mel.std(0) + 1e-3)
    m = mel.reshape(len(mel), bands, -1).mean(2)
    idx = np.round((s.times + s.clip.audio_lag) * 80).astype(int)
    cols = [m[np.clip(idx + o, 0, len(m) - 1)] for o in range(-int(past * 80), int(future * 80) + 1, 2)]
    return np.concatenate([*cols, np.ones((len(idx), 1))], 1)


def phone_loop(rec: Recogniser, wav: np.ndarray) -> tuple[list[tuple[str, float, float]], float]:
    """pocketsphinx allphone segments (espeak mnemonic, start s, end s) and the decode seconds."""
    t0 = time.perf_counter()
    segs = rec.phone_loop(wav)
    return [(p.phone, p.start, p.end) for p in segs], time.perf_counter() - t0


def class_features(segs: list[tuple[str, float, float]], s: Sample, loud: np.ndarray) -> np.ndarray:
    lag = s.clip.audio_lag
    ev = [(max(a - lag, 0.0), b - lag, espeak_class(p)) for p, a, b in segs if b - lag > 0]
    return features(timeline(ev, "allphone"), s.times, PHONETIC, loud)


def loo_predictions(samples: list[Sample], feats: list[np.ndarray]) -> list[np.ndarray]:
    """Each sample's units from a ridge map fitted on the other identities."""
    out: list[np.ndarray] = [np.zeros(0)] * len(samples)
    for ident in sorted({s.ident for s in samples}):
        train = [i for i, s in enumerate(samples) if s.ident != ident]
        w = fit_ridge(
            np.concatenate([feats[i] for i in train]), np.concatenate([samples[i].units for i in train]), ALPHA
        )
        for i, s in enumerate(samples):
            if s.ident == ident:
                out[i] = feats[i] @ w
    return out


def scores(samples: list[Sample], pred: list[np.ndarray]) -> dict[str, float]:
    out = {}
    for ident in sorted({s.ident for s in samples}):
        idx = [i for i, s in enumerate(samples) if s.ident == ident]
        out[ident] = corr(
            np.concatenate([pred[i][:, GAP] for i in idx]), np.concatenate([samples[i].units[:, GAP] for i in idx])
        )
    return out


def zmix(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    """Half and half, each scaled to unit spread over all frames (so neither dominates by scale)."""
    sa = np.concatenate(a)[:, GAP].std() + 1e-9
    sb = np.concatenate(b)[:, GAP].std() + 1e-9
    return [0.5 * x / sa + 0.5 * y / sb for x, y in zip(a, b, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="audio-only lip drives compared, leaving one identity out")
    p.add_argument("--recogniser", type=Path, action="append", required=True, help="pretrain_a2l phones runs")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--asr", type=Path, default=Path("data/asr"), help="training.asr_phones shards (words+align)")
    p.add_argument("--basis", type=Path, default=Path("engines/default"))
    p.add_argument("--offsets", type=Path, default=None)
    p.add_argument("--exclude", action="append", default=[])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    excl = list(EXCLUDE) + args.exclude
    clips = [
        c for c in load_dir(args.data) if c.real and c.has_audio and not any(fnmatch.fnmatch(c.name, g) for g in excl)
    ]
    attach_units(clips, load_basis(args.basis))
    if args.offsets is not None:
        apply_audio_offsets(clips, offset_records(json.loads(args.offsets.read_text())), 2)
    samples: list[Sample] = []
    for c in clips:
        assert c.units is not None
        t = c.times[c.valid]
        samples.append(Sample(c, identity(c.name), t, c.units[c.valid], []))
    louds = [loudness_db(s.clip.wav, 16000, s.times + s.clip.audio_lag) for s in samples]
    audio_s = sum(len(s.clip.wav) / 16000 for s in samples)
    preds: dict[str, list[np.ndarray]] = {}
    cost: dict[str, float] = {}
    base = [runtime_units(args.basis, s, 40.0, "base") for s in samples]
    preds["default"] = base
    preds["mel-ridge"] = loo_predictions(samples, [mel_features(s) for s in samples])
    loop, decode_s = [], 0.0
    recogniser = Recogniser()
    for s, loud in zip(samples, louds, strict=True):
        segs, dt = phone_loop(recogniser, s.clip.wav)
        decode_s += dt
        loop.append(class_features(segs, s, loud))
    cost["phone-loop"] = decode_s / audio_s * 1000 / FPS
    preds["phone-loop"] = loo_predictions(samples, loop)
    shards = {sh.name.removeprefix("asr_"): (sh.phone, sh.symbols) for sh in load_shards(args.asr)}
    if all(s.clip.name in shards for s in samples):
        preds["words+align"] = loo_predictions(
            samples,
            [
                features(asr_timeline(*shards[s.clip.name], s.clip.audio_lag), s.times, PHONETIC, loud)
                for s, loud in zip(samples, louds, strict=True)
            ],
        )
    for k, run in enumerate(args.recogniser):
        rec = load_a2l(run)
        frames = 0
        t1 = time.perf_counter()
        logp = [class_logp(rec, s.clip, s.times, 0.04, rec.cfg.window) for s in samples]
        frames += sum(len(x) for x in logp)
        cost[f"recogniser-{k}"] = (time.perf_counter() - t1) * 1000 / frames
        preds[f"recogniser-{k}"] = loo_predictions(samples, [design(x) for x in logp])
    recs = [n for n in preds if n.startswith("recogniser-")]
    if len(recs) > 1:  # the seeds' mapped units averaged: an ensemble
        preds["recogniser-mean"] = [np.mean([preds[n][i] for n in recs], axis=0) for i in range(len(samples))]
    for name in [n for n in preds if n != "default"]:
        preds[f"{name} + default"] = zmix(preds[name], base)
    table = {name: scores(samples, pr) for name, pr in preds.items()}
    idents = sorted({s.ident for s in samples})
    unseen = [i for i in idents if i not in TRAINED_ON]
    lines = [
        "| drive | " + " | ".join(idents) + " | mean, all | mean, unseen by default |",
        "|---|" + "---|" * (len(idents) + 2),
    ]
    for name, sc in table.items():
        cells = " | ".join(f"{sc[i]:.3f}" for i in idents)
        lines.append(
            f"| {name} | {cells} | {np.mean([sc[i] for i in idents]):.3f} | {np.mean([sc[i] for i in unseen]):.3f} |"
        )
    lines.append("")
    lines.append(
        "Cost on this host (ms of compute per 25 fps video frame): "
        + ", ".join(f"{k} {v:.2f}" for k, v in cost.items())
    )
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python -m benchmarks.audio_recognisers " + " ".join(argv if argv is not None else sys.argv[1:]),
        "moc": table,
        "unseen_by_default": unseen,
        "cost_ms_per_frame": cost,
        "frames": {i: int(sum(len(s.times) for s in samples if s.ident == i)) for i in idents},
        "wall_s": round(time.time() - t0, 1),
    }
    atomic.write_text(args.out / "audio_recognisers.json", json.dumps(doc, indent=1) + "\n")
    atomic.write_text(args.out / "audio_recognisers_table.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
