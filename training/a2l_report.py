"""Run audio-to-lip configurations over several seeds and tabulate the held-out results.

    python -m training.a2l_report --configs baseline,tts --seeds 0,1,2 --out runs/a2l_report

Every (config, seed) run is ``python -m training.train_a2l`` (after the config's own
preparation steps, e.g. pretraining) in ``OUT/<config>/s<seed>``; runs that already have an
``eval.json`` are not repeated, so an interrupted report resumes. The table gives, per
config, the mean ± std over seeds of the held-out inner-gap correlation at each lookahead
and of the loudness-envelope baseline on the same frames, for all held-out clips and per
group (``dev``: unseen speakers; ``holdout``: the held-out training identity).
Writes ``OUT/report.json`` and ``OUT/report.md``. Every step runs as a child process with
``nice -n 19`` and one thread.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("training.a2l_report")
LOOKAHEAD_KEYS = ("gap_corr@0ms", "gap_corr@40ms", "gap_corr@80ms", "gap_corr@120ms")
GROUPS = ("mean", "dev", "holdout")


@dataclass(frozen=True)
class Step:
    """A preparation command (module + args) and the file whose existence means it is done.
    ``{root}``, ``{seed}`` and ``{run}`` in args and ``done`` are substituted."""

    module: str
    args: tuple[str, ...]
    done: str


@dataclass(frozen=True)
class Config:
    description: str
    train: tuple[str, ...] = ()  # extra train_a2l arguments
    prepare: tuple[Step, ...] = field(default_factory=tuple)


TTS_DIR = "data2/tts"
TTS_DATA = Step("training.tts_data", ("--out", TTS_DIR, "--minutes", "30"), TTS_DIR + "/tts_0014.npz")
ASR_DIR = "data2/asr"
ASR_DATA = Step("training.asr_phones", ("--data", "data2/train", "--out", ASR_DIR), ASR_DIR + "/asr.json")


def pretrain_phones(name: str, *dirs: str, per_seed: bool = False) -> Step:
    """Phone-classification pretraining on ``dirs`` into ``{root}/pre_<name>``; with
    ``per_seed`` once per seed (its own --seed and output), so that the spread over seeds
    includes the pretraining's, not only the fine-tuning's."""
    out = "{root}/pre_" + name + ("_s{seed}" if per_seed else "")
    args = ["--task", "phones", *(a for d in dirs for a in ("--tts", d)), "--out", out, "--steps", "800"]
    if per_seed:
        args += ["--seed", "{seed}"]
    return Step("training.pretrain_a2l", tuple(args), out + "/pretrain.json")


PRE_PHONES = pretrain_phones("phones", TTS_DIR)
PRE_ASR = pretrain_phones("asr", ASR_DIR)
PRE_TTS_ASR = pretrain_phones("tts_asr", TTS_DIR, ASR_DIR)
PRE_CALS = Step(
    "training.pretrain_a2l",
    ("--task", "masked", "--arch", "cals", "--tts", TTS_DIR, "--data", "data2/train", "--out", "{root}/pre_cals",
     "--steps", "600", "--batch", "64"),
    "{root}/pre_cals/pretrain.json",
)  # fmt: skip
TEACHER = Step(
    "training.train_a2l",
    ("--data", "data2/train", "--dev", "data2/clips", "--arch", "teacher", "--out", "{root}/teacher/s0",
     "--steps", "600", "--batch", "64", "--threads", "1", "--seed", "0"),
    "{root}/teacher/s0/eval.json",
)  # fmt: skip

# Pretraining runs (TTS generation, encoder pretraining, the teacher) are shared by the seeds
# of a config: the seed spread is that of the fine-tuning. The *_ps configs repeat the
# pretraining per seed.
CONFIGS: dict[str, Config] = {
    "baseline": Config("AudioToLip (0.43 M, 300 ms window), real train audio only: the committed default's recipe"),
    "tts": Config(
        "AudioToLip, encoder pretrained on 30 min of augmented espeak speech (10 languages) to classify the "
        "visual phoneme class and the phoneme of each frame, then trained on the real data",
        ("--init", "{root}/pre_phones"),
        (TTS_DATA, PRE_PHONES),
    ),
    "asr": Config(
        "AudioToLip, encoder pretrained to classify the visual phoneme class and the phoneme of each frame of the "
        "real training audio, labelled by pocketsphinx's en-us model (training.asr_phones), then trained on the "
        "real data",
        ("--init", "{root}/pre_asr"),
        (ASR_DATA, PRE_ASR),
    ),
    "tts_asr": Config(
        "AudioToLip, encoder pretrained on the TTS speech and the recognised real audio together, then trained on "
        "the real data",
        ("--init", "{root}/pre_tts_asr"),
        (TTS_DATA, ASR_DATA, PRE_TTS_ASR),
    ),
    "tts_ps": Config(
        "tts with the pretraining repeated per seed",
        ("--init", "{root}/pre_phones_s{seed}"),
        (TTS_DATA, pretrain_phones("phones", TTS_DIR, per_seed=True)),
    ),
    "asr_ps": Config(
        "asr with the pretraining repeated per seed",
        ("--init", "{root}/pre_asr_s{seed}"),
        (ASR_DATA, pretrain_phones("asr", ASR_DIR, per_seed=True)),
    ),
    "tts_asr_ps": Config(
        "tts_asr with the pretraining repeated per seed",
        ("--init", "{root}/pre_tts_asr_s{seed}"),
        (TTS_DATA, ASR_DATA, pretrain_phones("tts_asr", TTS_DIR, ASR_DIR, per_seed=True)),
    ),
    "cals_scratch": Config("CALS encoder (1.3 s causal window, 0.16 M), no pretraining", ("--arch", "cals")),
    "cals": Config(
        "CALS encoder pretrained by masked prediction on all training audio (real train clips incl. generated, "
        "TTS), then trained on the real data",
        ("--arch", "cals", "--init", "{root}/pre_cals"),
        (TTS_DATA, PRE_CALS),
    ),
    "teacher": Config(
        "teacher: the conv model on a 600 ms window centred on the frame (0.3 s of future audio), 0.63 M; not causal",
        (
            "--arch",
            "teacher",
        ),
    ),
    "student": Config(
        "AudioToLip student (0.43 M, causal) trained on ground truth + the teacher's outputs on the real, "
        "generated and 20 min of TTS audio",
        ("--teacher", "{root}/teacher/s0", "--kd-tts", TTS_DIR),
        (TTS_DATA, TEACHER),
    ),
}


def _sub(s: str, root: Path, seed: int, run: Path) -> str:
    return s.format(root=root, seed=seed, run=run)


def _run(module: str, args: list[str], log: Path) -> None:
    cmd = ["nice", "-n", "19", sys.executable, "-m", module, *args]
    logger.info("%s > %s", " ".join(cmd), log)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "a") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{module} failed (exit {r.returncode}), see {log}")
    logger.info("done in %.0f s", time.time() - t0)


def run_config(name: str, cfg: Config, seed: int, root: Path, common: list[str]) -> Path:
    run = root / name / f"s{seed}"
    for st in cfg.prepare:
        if not Path(_sub(st.done, root, seed, run)).exists():
            _run(st.module, [_sub(a, root, seed, run) for a in st.args], root / name / f"prepare_s{seed}.log")
    if not (run / "eval.json").exists():
        args = [*common, "--seed", str(seed), "--threads", "1", "--out", str(run)]
        args += [_sub(a, root, seed, run) for a in cfg.train]
        _run("training.train_a2l", args, run.with_suffix(".log"))
    return run


def onnx_speed(run: Path, repeats: int = 300) -> dict[str, float]:
    """Export a run to ONNX (batch 1) and time one frame in onnxruntime with one thread."""
    import onnxruntime as ort
    import torch

    from .a2l_runs import load_run
    from .models import A2LConfig

    model = load_run(run)
    cfg = A2LConfig(**json.loads((run / "meta.json").read_text())["config"])
    mel = torch.rand(1, cfg.window, cfg.n_mels) * 8 - 4
    la = torch.full((1, 1), 0.08)
    path = run / "speed.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model, (mel, la), str(path), input_names=["mel", "lookahead"], output_names=["units"],
            opset_version=17, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
        ref = model(mel, la).numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {"mel": mel.numpy(), "lookahead": la.numpy()}
    out = sess.run(None, feed)[0]
    for _ in range(20):
        sess.run(None, feed)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        ts.append((time.perf_counter() - t0) * 1000)
    return {
        "ms_per_frame_p50": float(np.median(ts)),
        "ms_per_frame_p90": float(np.percentile(ts, 90)),
        "max_abs_diff_vs_torch": float(np.abs(out - ref).max()),
        "params": int(sum(p.numel() for p in model.parameters())),
    }


def _stat(vals: list[float]) -> dict[str, float]:
    a = np.asarray(vals, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def aggregate(root: Path, names: list[str], seeds: list[int]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in names:
        evs = []
        for s in seeds:
            p = root / name / f"s{s}" / "eval.json"
            if p.exists():
                evs.append(json.loads(p.read_text()))
        if not evs:
            continue
        row: dict[str, object] = {"seeds": [e.get("seed") for e in evs], "description": CONFIGS[name].description}
        for g in GROUPS:
            for k in (*LOOKAHEAD_KEYS, "envelope_corr"):
                key = f"{g}_{k}"
                if all(key in e for e in evs):
                    row[key] = _stat([float(e[key]) for e in evs])
        speed = root / name / "s0" / "speed.json"
        if speed.exists():
            row["speed"] = json.loads(speed.read_text())
        out[name] = row
    return out


def _fmt(st: object) -> str:
    if not isinstance(st, dict):
        return "–"
    return f"{st['mean']:.3f} ± {st['std']:.3f}"


def markdown(rep: dict[str, object]) -> str:
    lines = []
    for g, title in (
        ("mean", "all held-out clips (speaker_a..d + held-out identity)"),
        ("dev", "unseen speakers (speaker_a..d)"),
        ("holdout", "held-out training identity"),
    ):
        lines += [
            f"### {title}: inner-gap correlation, mean ± std over seeds",
            "",
            "| config | seeds | 0 ms | 40 ms | 80 ms | 120 ms | envelope |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in rep.items():
            assert isinstance(row, dict)
            cells = [_fmt(row.get(f"{g}_{k}")) for k in (*LOOKAHEAD_KEYS, "envelope_corr")]
            lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    speeds = {n: r["speed"] for n, r in rep.items() if isinstance(r, dict) and "speed" in r}
    if speeds:
        lines += [
            "### size and speed (seed 0 run, ONNX, batch 1, onnxruntime, 1 thread)",
            "",
            "| config | params | ms/frame p50 | p90 |",
            "|---|---|---|---|",
        ]
        for n, sp in speeds.items():
            lines.append(
                f"| {n} | {sp['params'] / 1e6:.2f} M | {sp['ms_per_frame_p50']:.2f} | {sp['ms_per_frame_p90']:.2f} |"
            )
        lines.append("")
    lines.append("Configs:")
    lines += [f"- **{n}**: {r['description']}" for n, r in rep.items() if isinstance(r, dict)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="audio-to-lip configs x seeds -> report table")
    p.add_argument("--configs", default="baseline", help=f"comma-separated, from {sorted(CONFIGS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=Path("runs/a2l_report"))
    p.add_argument("--data", default="data2/train")
    p.add_argument("--dev", default="data2/clips")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--aggregate-only", action="store_true", help="only tabulate the runs that exist")
    p.add_argument("--speed", action="store_true", help="time each config's seed-0 run in onnxruntime")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"error: unknown config(s) {unknown}; known: {sorted(CONFIGS)}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        print(f"error: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    common = ["--data", args.data, "--dev", args.dev, "--steps", str(args.steps), "--batch", str(args.batch)]
    if not args.aggregate_only:
        for name in names:
            for s in seeds:
                run_config(name, CONFIGS[name], s, args.out, common)
    if args.speed:
        for name in names:
            run = args.out / name / "s0"
            if (run / "eval.json").exists() and not (run / "speed.json").exists():
                (run / "speed.json").write_text(json.dumps(onnx_speed(run), indent=1))
    rep = aggregate(args.out, names, seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(rep, indent=1))
    md = markdown(rep)
    (args.out / "report.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
