"""What a bench run shows: the tables of ``bench.md`` (:func:`markdown`) and the PNG plots
(:func:`plots`), both from the report dict alone.

The markdown regenerates from a loaded ``bench.json`` byte for byte, so the tables of a recorded
run (those the README quotes) can be rebuilt from its JSON. Every table names the source of its
figures; a null figure is printed as "null" with a footnote giving the reason recorded in the
JSON, and the lip-sync expert's provenance is stated above the tables that depend on it.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from .quality import OFFSET_SYNC_FRAMES

STEAL_WARN_PCT = 2.0  # host CPU steal (% of CPU time) above which latency figures are flagged


def _f(x: Any, digits: int = 2) -> str:
    """A table cell: ``digits`` decimals for a float, "—" for a missing figure."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def markdown(report: dict[str, Any]) -> str:
    """The tables of a report (also usable on a loaded bench.json)."""
    m = report["machine"]
    sec = report["sections"]
    lines = [
        "# rtdub bench",
        "",
        f"- machine: {m['cpu_model']}, {m['cores_usable']} usable cores, {_f(m['memory_gb'])} GB; "
        f"load average at start {m['load_average_1_5_15']}",
        f"- commit `{_f(m['git_commit'])}`{' (dirty)' if m.get('git_dirty') else ''}; model "
        f"`{report.get('model', {}).get('name')}`; onnxruntime {m['packages'].get('onnxruntime')}, "
        f"mediapipe {m['packages'].get('mediapipe')}, av {m['packages'].get('av')}",
        f"- command: `{report['command']}`; mode: {'quick' if report['config']['quick'] else 'full'}; "
        f"wall time {_f(report.get('wall_s'), 1)} s; {report['created']}",
    ]
    lines += [f"- note: {n}" for n in report.get("notes", [])]
    lines += _expert_md(report.get("expert"))
    sl = sec.get("stage_latency")
    if sl and sl.get("runs"):
        runs = sl["runs"]
        lines += ["", "## Per-stage latency (ms, p50 / p95 / p99)", "", f"Source: {runs[0]['source']}.", ""]
        head = "| stage | " + " | ".join(f"{r['backend']} {r['width']}x{r['height']}" for r in runs) + " |"
        lines += [head, "|---|" + "---|" * len(runs)]
        for st in [*sl["stages"], "total"]:
            cells = []
            for r in runs:
                p = r["total_ms"] if st == "total" else r["stages_ms"].get(st)
                cells.append("—" if not p or p["n"] == 0 else f"{p['p50']:.2f} / {p['p95']:.2f} / {p['p99']:.2f}")
            lines.append(f"| {'**total**' if st == 'total' else st} | " + " | ".join(cells) + " |")
        lines.append("| measured frames | " + " | ".join(str(r["frames"]) for r in runs) + " |")
        lines.append(
            "| all frames: face / no face / silent | "
            + " | ".join(f"{r['faces']} / {r['no_face']} / {r['silent']}" for r in runs)
            + " |"
        )
    if sl:
        skipped = sl.get("skipped_backends", [])
        lines += [""] + [f"- backend skipped: {s['backend']}: {s['reason']}" for s in skipped] if skipped else []
    tp = sec.get("throughput")
    if tp:
        lines += ["", "## Offline throughput (`rtdub dub`)", ""]
        if tp.get("runs"):
            lines += [
                "| clip | audio | backend | frames | wall s | frames/s | x real time |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in tp["runs"]:
                lines.append(
                    f"| {r['clip']} | {r['audio']} | {r['backend']} | {r['frames']} | {_f(r['wall_s'])} | "
                    f"{_f(r['frames_per_s'], 1)} | {_f(r['x_realtime'])} |"
                )
        lines += [""] + [f"- {n}" for n in tp["notes"]] if tp.get("notes") else []
    la = sec.get("lookahead")
    if la and la.get("status") == "ok":
        nulls = _Nulls()
        lines += [
            "",
            "## Lookahead trade-off",
            "",
            "| lookahead ms | MOC ↑ | LMD ↓ | lip-closure AUC ↑ | LSE-C ↑ | LSE-D ↓ | audio wait ms "
            "| compute p50 / p95 ms | added latency, audio just in time | added latency, audio buffered |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in la["rows"]:
            c = r["compute_ms"]
            lines.append(
                f"| {r['lookahead_ms']:g} | {_f(r['MOC'], 3)} | {_f(r['LMD'])} | {_f(r['lip_closure_auc'], 3)} | "
                f"{nulls.cell(r, 'LSE_C')} | {nulls.cell(r, 'LSE_D')} | {_f(r['audio_wait_ms'], 1)} | "
                f"{_f(c['p50'])} / {_f(c['p95'])} | "
                f"{_f(r['added_latency_audio_just_in_time_ms'], 1)} | {_f(r['added_latency_audio_buffered_ms'], 1)} |"
            )
        b = la["baselines"]
        lines += [
            "",
            f"- baselines: frozen mouth MOC {_f(b['MOC_frozen'], 3)}, true units MOC {_f(b['MOC_true_units'], 3)}, "
            f"frozen-mouth lip-closure AUC {_f(b['lip_closure_auc_frozen'], 3)}; lips from the TTS's phoneme "
            f"events (the phonetic drive) {_f(b.get('lip_closure_auc_events'), 3)}; the audio-to-lip model "
            f"without the viseme recogniser {_f(b.get('lip_closure_auc_audio_base'), 3)} (at the quality lookahead).",
            "- latency columns are derived (audio wait + measured compute p50), not glass-to-glass",
            f"- source: {la['source']}",
        ]
        if la.get("clips_note"):
            lines.append(f"- {la['clips_note']}")
        lines += _sync_md(la, nulls)
    elif la:
        lines += ["", "## Lookahead trade-off", "", f"{la.get('status')}: {la.get('reason') or la.get('error')}"]
    q = sec.get("quality")
    if q:
        lines += ["", "## Quality (reconstruction, docs/design.md §5)", ""]
        if q.get("status") == "ok":
            lines += [
                f"Lookahead {q['lookahead_ms']:g} ms, backend {q['backend']}, clips {', '.join(q['clips'])}"
                + (f" (first {q['clip_frames']} frames each)" if q.get("clip_frames") else "")
                + f". Source: {q['source']}.",
                "",
                "| clip | mode | LMD ↓ | MOC ↑ | PSNR ↑ | SSIM ↑ | sharpness | LSE-C ↑ | LSE-D ↓ | AV offset |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            nulls = _Nulls()
            rows = [(c, mode, r) for c, modes in q["per_clip"].items() for mode, r in modes.items()]
            rows += [("**mean**", mode, r) for mode, r in q["mean"].items()]
            for c, mode, r in rows:
                off = r.get("AV_offset")
                off_s = (
                    f"{off:+d}"
                    if isinstance(off, int)
                    else f"{r.get('in_sync_clips', 0)}/{r.get('LSE_clips', 0)} in sync"
                )
                lines.append(
                    f"| {c} | {mode} | {_f(r['LMD'])} | {_f(r['MOC'], 3)} | {_f(r['PSNR'])} | {_f(r['SSIM'], 3)} | "
                    f"{_f(r['sharpness'], 3)} | {nulls.cell(r, 'LSE_C')} | {nulls.cell(r, 'LSE_D')} | "
                    f"{off_s if r.get('LSE_C') is not None else '—'} |"
                )
            g = q.get("ground_truth_sync") or {}
            lines += [""]
            if g.get("LSE_C") is not None:
                lines.append(
                    f"- ground truth (each clip with its own audio): LSE-C {_f(g['LSE_C'], 3)}, "
                    f"LSE-D {_f(g['LSE_D'], 3)}, "
                    f"{g['in_sync_clips']}/{g['LSE_clips']} clips with an AV offset within ±{OFFSET_SYNC_FRAMES} frame"
                )
            lines += [
                f"- AV offset: frames, syncnet_python's sign (0 = in sync); mean rows: clips within "
                f"±{OFFSET_SYNC_FRAMES} frame",
                *nulls.notes(),
            ]
        else:
            lines.append(f"{q.get('status')}: {q.get('reason') or q.get('error')}")
    st = sec.get("streaming")
    if st:
        lines += ["", "## Streaming (glass-to-glass, loopback WebRTC)", ""]
        if st.get("status") == "ok":
            lines += _streaming_md(st)
        else:
            lines.append(f"{st.get('status')}: {st.get('reason') or st.get('error')}")
    errors = [k for k, v in sec.items() if v.get("status") == "error"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {k}: {sec[k].get('error')}" for k in errors]
    return "\n".join(lines) + "\n"


class _Nulls:
    """Table cells for figures that may be null: the value, or "null" with a footnote mark
    whose note gives the reason recorded in the JSON."""

    MARKS = "¹²³⁴⁵⁶⁷⁸⁹"

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def cell(self, row: dict[str, Any], key: str, digits: int = 3) -> str:
        v = row.get(key)
        if v is not None:
            return _f(v, digits)
        reason = str(row.get("LSE_reason") or "not measured")
        if reason not in self.reasons:
            self.reasons.append(reason)
        i = self.reasons.index(reason)
        return "null" + (self.MARKS[i] if i < len(self.MARKS) else f"({i + 1})")

    def notes(self) -> list[str]:
        """One footnote line per distinct reason, in the order of their marks."""
        return [
            f"- null{self.MARKS[i] if i < len(self.MARKS) else f'({i + 1})'}: {r}" for i, r in enumerate(self.reasons)
        ]


def _expert_md(ex: dict[str, Any] | None) -> list[str]:
    """The lip-sync expert's provenance lines (or why none was loaded)."""
    if not ex:
        return []
    if ex.get("status") != "loaded":
        return [f"- lip-sync expert: none loaded from `{ex.get('root')}` ({ex.get('reason')}): LSE figures are null"]
    tr = ex.get("training") or {}
    sha = ex.get("sha256_16") or {}
    desc = (
        f"- lip-sync expert: `{ex['root']}` ({ex.get('format')}; sha256 video {sha.get('video.onnx')}, "
        f"audio {sha.get('audio.onnx')})"
    )
    if tr:
        mins = tr.get("seconds")
        desc += (
            f"; trained {tr.get('step')} steps"
            + (f" in {mins / 60:.0f} min" if isinstance(mins, (int, float)) else "")
            + f", augmentation {'on' if tr.get('augment') else 'off'}"
        )
        if tr.get("held_out"):
            desc += f"; held out from its training: {', '.join(tr['held_out'])}"
        hs = tr.get("held_out_scores")
        if isinstance(hs, dict) and hs:
            desc += (
                "; held-out pair scores at the end of training (in-sync vs shifted pairs, acc chance 0.5): "
                + ", ".join(f"{k} {_f(v, 3)}" for k, v in hs.items())
            )
    return [desc, f"- lip-sync expert status: {ex.get('assessment')}"]


def _sync_md(la: dict[str, Any], nulls: _Nulls) -> list[str]:
    """The lookahead's LSE rows next to the reference rows (ground truth, frozen mouth)."""
    b = la["baselines"]
    clips = la.get("clips") or []
    rows: list[tuple[str, dict[str, Any]]] = [(f"model, lookahead {r['lookahead_ms']:g} ms", r) for r in la["rows"]]
    if "sync_ground_truth" in b:
        rows.append(("**ground truth** (each clip with its own audio)", b["sync_ground_truth"]))
    if "sync_frozen" in b:
        rows.append((f"**frozen mouth** (lookahead {b.get('sync_frozen_lookahead_ms', 0):g} ms)", b["sync_frozen"]))
    lines = [
        "",
        "### Lip sync against the expert (LSE over ±15 frames, as `rtdub eval`)",
        "",
        f"| render | LSE-C ↑ | LSE-D ↓ | AV offset per clip ({' / '.join(clips) or 'no clips'}) "
        f"| clips within ±{OFFSET_SYNC_FRAMES} frame |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows:
        offs = r.get("AV_offset_per_clip") or {}
        off_s = " / ".join(f"{offs[c]:+d}" if c in offs else "—" for c in clips) if offs else "—"
        in_sync = f"{r['in_sync_clips']}/{r['LSE_clips']}" if r.get("LSE_clips") else "—"
        lines.append(f"| {name} | {nulls.cell(r, 'LSE_C')} | {nulls.cell(r, 'LSE_D')} | {off_s} | {in_sync} |")
    held = la.get("expert_held_out_clips") or {}
    lines += [""]
    if held:
        groups = {"held out from the expert's training": True, "seen in its training": False, "not listed": None}
        parts = [f"{k}: {', '.join(c for c, v in held.items() if v is val)}" for k, val in groups.items()]
        lines.append("- clips " + "; ".join(p for p in parts if not p.endswith(": ")))
    lines += [
        "- AV offset: frames, syncnet_python's sign (0 = in sync); LSE scored on the rendered frames before "
        "encoding, each aligned with its own landmarks; LSE values are on the expert's unit-vector scale, "
        "not the published one",
        *nulls.notes(),
    ]
    return lines


def _streaming_md(st: dict[str, Any]) -> list[str]:
    """The streaming section's glass-to-glass table and facts, flagged when the host stole CPU."""
    r = st.get("result", {})
    lines = [f"Source: {st['source']}.", ""]
    steal = r.get("host_steal_pct")
    if isinstance(steal, (int, float)) and steal > STEAL_WARN_PCT:
        lines += [
            f"**Note: the host took {steal:.1f} % of this VM's CPU time (steal) during the run: the latencies "
            "are inflated by other tenants and not comparable with quiet runs.**",
            "",
        ]
    g2g = r.get("glass_to_glass_ms") or {}
    rows = [(f"glass-to-glass, {k}", v) for k, v in g2g.items()]
    if r.get("added_latency_ms"):
        rows.append(("added latency (dubbed - passthrough, per frame)", r["added_latency_ms"]))
    if rows:
        lines += ["| ms | p50 | p95 | p99 | frames |", "|---|---|---|---|---|"]
        for name, p in rows:
            lines.append(
                f"| {name} | {_f(p.get('p50'), 1)} | {_f(p.get('p95'), 1)} | {_f(p.get('p99'), 1)} | {_f(p.get('n'))} |"
            )
    shown = ("glass_to_glass_ms", "added_latency_ms")
    facts = []
    for k, v in r.items():
        if k in shown:
            continue
        if isinstance(v, dict) and "series" in v:  # per-second samples: in the JSON only
            v = {kk: vv for kk, vv in v.items() if kk != "series"}
        facts.append(f"{k}: {json.dumps(v)}")
    proc = st.get("process") or {}
    if proc.get("cpu_cores_used") is not None:
        facts.append(f"CPU: {proc['cpu_cores_used']:.2f} cores on average over {proc['wall_s']:.1f} s ({proc['note']})")
    lines += [""] + [f"- {f}" for f in facts]
    return lines


def plots(report: dict[str, Any], samples: dict[str, Any], out: Path) -> list[Path]:
    """Latency histograms, per-stage bars and the lookahead curve as PNGs in ``out``."""
    from matplotlib.figure import Figure  # Agg canvas on savefig; no pyplot global state

    written: list[Path] = []
    sl = report["sections"].get("stage_latency") or {}
    runs = sl.get("runs") or []
    for r in runs:
        data = samples.get(f"stage_latency/{r['key']}", {})
        series: list[tuple[str, list[float]]] = [(k, v) for k, v in data.get("stages_ms", {}).items()]
        if data.get("total_ms"):
            series.append(("total", data["total_ms"]))
        if not series:
            continue
        cols = 3
        rows = math.ceil(len(series) / cols)
        fig = Figure(figsize=(11, 2.6 * rows), layout="constrained")
        for i, (name, vals) in enumerate(series):
            ax = fig.add_subplot(rows, cols, i + 1)
            v = np.asarray(vals, np.float64)
            if v.size:
                ax.hist(v, bins=40, color="tab:blue", alpha=0.8)
                for q, ls in ((50, "-"), (95, "--"), (99, ":")):
                    ax.axvline(float(np.percentile(v, q)), color="k", linestyle=ls, linewidth=1, label=f"p{q}")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("ms", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.legend(fontsize=7)
        fig.suptitle(f"per-frame latency, {r['backend']} {r['width']}x{r['height']} ({r['frames']} frames)")
        p = out / f"latency_hist_{r['key']}.png"
        fig.savefig(p, dpi=90)
        written.append(p)
    if runs:
        stages = list(sl["stages"])
        fig = Figure(figsize=(10, 4.2), layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / len(runs)
        x = np.arange(len(stages))
        for j, r in enumerate(runs):
            p50 = np.array([r["stages_ms"][s]["p50"] or 0.0 for s in stages])
            p95 = np.array([r["stages_ms"][s]["p95"] or 0.0 for s in stages])
            p99 = np.array([r["stages_ms"][s]["p99"] or 0.0 for s in stages])
            xs = x - 0.4 + width * (j + 0.5)
            ax.bar(xs, np.maximum(p50, 1e-3), width, label=f"{r['backend']} {r['width']}x{r['height']} p50")
            ax.errorbar(xs, p50, yerr=[np.zeros_like(p50), p95 - p50], fmt="none", ecolor="k", capsize=2)
            ax.plot(xs, np.maximum(p99, 1e-3), "k_", markersize=8)
        ax.set_xticks(x, stages)
        ax.set_yscale("log")
        ax.set_ylabel("ms per frame (bar p50, whisker p95, dash p99)")
        ax.set_title("per-stage latency")
        ax.legend(fontsize=8)
        p = out / "stage_bars.png"
        fig.savefig(p, dpi=90)
        written.append(p)
    la = report["sections"].get("lookahead") or {}
    if la.get("status") == "ok" and la.get("rows"):
        rows_ = la["rows"]
        las = [r["lookahead_ms"] for r in rows_]
        fig = Figure(figsize=(14, 4), layout="constrained")
        a1 = fig.add_subplot(1, 3, 1)
        for key, label, colour in (
            ("MOC", "MOC (clips)", "tab:blue"),
            ("lip_closure_auc", "lip-closure AUC", "tab:green"),
        ):
            ys = [r[key] for r in rows_]
            if any(y is not None for y in ys):
                a1.plot(las, [np.nan if y is None else y for y in ys], "o-", color=colour, label=label)
        b = la["baselines"]
        for key, label, colour in (
            ("MOC_frozen", "MOC frozen mouth", "tab:blue"),
            ("lip_closure_auc_frozen", "AUC frozen mouth", "tab:green"),
        ):
            if b.get(key) is not None:
                a1.axhline(b[key], color=colour, linestyle="--", linewidth=1, label=label)
        a1.set_xlabel("lookahead (ms)")
        a1.set_ylabel("sync (higher is better)")
        a1.set_title("mouth opening vs lookahead", fontsize=9)
        a1.legend(fontsize=7)
        a3 = fig.add_subplot(1, 3, 2)
        lse_c = [r.get("LSE_C") for r in rows_]
        if any(y is not None for y in lse_c):
            a3.plot(las, [np.nan if y is None else y for y in lse_c], "o-", color="tab:purple", label="LSE-C model")
            for key, label, ls in (("sync_ground_truth", "ground truth", "--"), ("sync_frozen", "frozen mouth", ":")):
                ref = (b.get(key) or {}).get("LSE_C")
                if ref is not None:
                    a3.axhline(ref, color="k", linestyle=ls, linewidth=1, label=f"LSE-C {label}")
            a3.set_title("LSE-C vs lookahead (expert: see bench.md)", fontsize=9)
            a3.legend(fontsize=7)
        else:
            reason = next((r.get("LSE_reason") for r in rows_ if r.get("LSE_reason")), "not measured")
            a3.text(0.5, 0.5, "LSE-C: null\n" + textwrap.fill(str(reason), 40), ha="center", va="center", fontsize=8)
            a3.set_title("LSE-C vs lookahead", fontsize=9)
        a3.set_xlabel("lookahead (ms)")
        a3.set_ylabel("LSE-C (higher is better)")
        a2 = fig.add_subplot(1, 3, 3)
        a2.plot(las, [r["added_latency_audio_just_in_time_ms"] for r in rows_], "o-", label="added, audio just in time")
        a2.plot(las, [r["added_latency_audio_buffered_ms"] for r in rows_], "s-", label="added, audio buffered")
        a2.plot(las, [r["compute_ms"]["p95"] or 0.0 for r in rows_], "^:", label="compute p95")
        a2.set_xlabel("lookahead (ms)")
        a2.set_ylabel("ms")
        a2.set_title("latency vs lookahead (derived)", fontsize=9)
        a2.legend(fontsize=7)
        p = out / "lookahead.png"
        fig.savefig(p, dpi=90)
        written.append(p)
    return written
