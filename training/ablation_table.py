"""Markdown ablation table from ``training.evaluate`` outputs (training/ABLATION.md).

    python -m training.ablation_table base=runs/abl/base lss=runs/abl/lss [--clips speaker_a speaker_b]
    python -m training.ablation_table base=runs/b_s0,runs/b_s1,runs/b_s2 lss=runs/l_s0,runs/l_s1

With comma-separated runs (seeds of one recipe) each variant gets one row per mode with the
mean ± standard deviation over its runs of the per-run clip means, and the dubbing AUC and
dev crop sharpness the same way.

Each NAME=RUN reads RUN/eval/eval.json and gives one row per mode (the audio-driven
``model`` and the ``true-units`` generator ceiling; ``frozen`` once, from the first run):
LMD, MOC, PSNR, SSIM, mouth sharpness and mouth-interior contrast, averaged over ``--clips`` (default: the clips
every run has), plus the dubbing AUC (/p b m/ vs open vowels), the run's training recipe and its dev
reconstruction from meta.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

COLS = ("LMD", "MOC", "PSNR", "SSIM", "sharpness", "interior")
FMT = {
    "LMD": "{:.3f}",
    "MOC": "{:.3f}",
    "PSNR": "{:.2f}",
    "SSIM": "{:.4f}",
    "sharpness": "{:.3f}",
    "interior": "{:.3f}",
}


def _report(run: Path) -> dict[str, Any]:
    f = run / "eval" / "eval.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no evaluation (run python -m training.evaluate --out {run / 'eval'})")
    rep: dict[str, Any] = json.loads(f.read_text())
    return rep


def load(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    rec: dict[str, dict[str, dict[str, float]]] = _report(run)["reconstruction"]
    return rec


def _cells(vals: list[float]) -> str:
    return " | ".join(FMT[k].format(v) for k, v in zip(COLS, vals, strict=True))


def mean_row(rec: dict[str, dict[str, dict[str, float]]], mode: str, clips: list[str]) -> list[float]:
    # evaluations from before a score existed give NaN for it
    return [float(np.mean([rec[c][mode].get(k, float("nan")) for c in clips])) for k in COLS]


HEADS = " | ".join(("LMD ↓", "MOC ↑", "PSNR ↑", "SSIM ↑", "sharpness", "interior"))


def _clips(recs: list[dict[str, dict[str, dict[str, float]]]], clips: list[str] | None) -> list[str]:
    """``clips``, or the clips every run evaluated; an error when one is missing somewhere."""
    common = sorted(set.intersection(*(set(r) for r in recs)))
    use = clips or common
    missing = [c for c in use if c not in common]
    if missing or not use:
        raise ValueError(f"clips not evaluated in every run: {missing or 'none in common'}")
    return use


def table(runs: list[tuple[str, Path]], clips: list[str] | None = None) -> str:
    recs = [(name, run, load(run)) for name, run in runs]
    use = _clips([r for _, _, r in recs], clips)
    head = f"| variant | mode | {HEADS} |"
    lines = [f"clips: {', '.join(use)}", "", head, "|---|---|" + "---|" * len(COLS)]
    first = recs[0][2]
    lines.append("| — | frozen | " + _cells(mean_row(first, "frozen", use)) + " |")
    for mode in ("model", "true-units"):
        for name, _, rec in recs:
            vals = mean_row(rec, mode, use)
            lines.append(f"| {name} | {mode} | " + _cells(vals) + " |")
    lines += ["", "| variant | dubbing AUC (model) | dev masked L1 (train_gen) | dev sharpness (crop) | recipe |"]
    lines.append("|---|---|---|---|---|")
    for name, run, _ in recs:
        meta = json.loads((run / "meta.json").read_text()) if (run / "meta.json").is_file() else {}
        dev = meta.get("dev", {})
        recipe = {k: v for k, v in meta.get("recipe", {}).items() if v not in (None, 0, 0.0)}
        if not (recipe.get("sync_weight") or recipe.get("ss_weight")):  # unused defaults
            recipe = {k: v for k, v in recipe.items() if not k.startswith("sync_")}
        l1, sharp = dev.get("masked_l1", float("nan")), dev.get("sharpness_ratio_crop", float("nan"))
        auc = _report(run).get("dubbing_auc", {}).get("model", float("nan"))
        lines.append(f"| {name} | {auc:.3f} | {l1:.4f} | {sharp:.3f} | `{json.dumps(recipe)}` |")
    return "\n".join(lines)


def _pm(vals: list[float], fmt: str) -> str:
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(float(np.mean(vals)))} ± {fmt.format(float(np.std(vals, ddof=1)))}"


def seeds_table(groups: list[tuple[str, list[Path]]], clips: list[str] | None = None) -> str:
    """One row per variant and mode: mean ± std over the variant's runs (seeds)."""
    recs = {name: [load(r) for r in runs] for name, runs in groups}
    use = _clips([r for rs in recs.values() for r in rs], clips)
    head = f"| variant | runs | mode | {HEADS} |"
    lines = [f"clips: {', '.join(use)}; mean ± std over runs", "", head, "|---|---|---|" + "---|" * len(COLS)]
    first = next(iter(recs.values()))[0]
    lines.append("| — | | frozen | " + _cells(mean_row(first, "frozen", use)) + " |")
    for mode in ("model", "true-units"):
        for name, rs in recs.items():
            rows = [mean_row(r, mode, use) for r in rs]
            cells = " | ".join(_pm([row[i] for row in rows], FMT[k]) for i, k in enumerate(COLS))
            lines.append(f"| {name} | {len(rs)} | {mode} | {cells} |")
    lines += ["", "| variant | dubbing AUC (model) | dev sharpness (crop, train_gen) |", "|---|---|---|"]
    for name, runs in groups:
        auc = [_report(r).get("dubbing_auc", {}).get("model", float("nan")) for r in runs]
        sharp = [
            json.loads((r / "meta.json").read_text()).get("dev", {}).get("sharpness_ratio_crop", float("nan"))
            if (r / "meta.json").is_file()
            else float("nan")
            for r in runs
        ]
        lines.append(f"| {name} | {_pm(auc, '{:.3f}')} | {_pm(sharp, '{:.3f}')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="markdown ablation table from training.evaluate outputs")
    p.add_argument("runs", nargs="+", help="NAME=RUN (RUN/eval/eval.json)")
    p.add_argument("--clips", nargs="*", default=None, help="clip names to average over (default: common ones)")
    args = p.parse_args(argv)
    groups: list[tuple[str, list[Path]]] = []
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or "" in path.split(","):
            print(f"ablation_table: error: {item!r} is not NAME=RUN[,RUN...]", file=sys.stderr)
            return 2
        groups.append((name, [Path(x) for x in path.split(",")]))
    try:
        if any(len(runs) > 1 for _, runs in groups):
            print(seeds_table(groups, args.clips))
        else:
            print(table([(name, runs[0]) for name, runs in groups], args.clips))
    except (FileNotFoundError, ValueError) as e:
        print(f"ablation_table: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
