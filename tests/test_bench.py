"""``rtdub bench`` machinery on a tiny configuration: the JSON schema, ordered percentiles,
the markdown table and valid PNGs; the quality section is skipped cleanly without clips; the
LSE figures are null with a reason when they cannot be measured, and measured (the same
numbers as ``rtdub eval``) when an expert and a clip are there. No timing thresholds."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtdub.cli.main import build_parser
from rtdub.cli.measure import config_from_args
from rtdub.measure.bench import sections
from rtdub.measure.bench.config import ALL_BACKENDS, SECTIONS, BenchConfig
from rtdub.measure.bench.provenance import expert_provenance, load_expert
from rtdub.measure.bench.quality import _lse
from rtdub.measure.bench.report import _expert_md, _streaming_md, markdown
from rtdub.measure.bench.run import SCHEMA, BenchOutput, run_bench
from rtdub.measure.bench.sections import BENCH_STAGES, Context, percentiles

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> BenchOutput:
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(
        out=out,
        frames=6,
        warmup=2,
        resolutions=((320, 240),),
        threads=1,
        clips=out / "no-clips-here",
        lookaheads_ms=(0.0, 120.0),
        closure_text="Bob may buy a big map.",
        notes=("test configuration",),
        # the streaming engine's own loopback run has its tests; here its section is faked below
        sections=("stage_latency", "throughput", "lookahead", "quality"),
    )
    return run_bench(cfg, command="pytest tiny bench")


def assert_ordered(p: Mapping[str, object]) -> None:
    assert set(p) >= {"n", "p50", "p95", "p99"}
    n = p["n"]
    assert isinstance(n, int) and n > 0
    p50, p95, p99 = p["p50"], p["p95"], p["p99"]
    assert isinstance(p50, float) and isinstance(p95, float) and isinstance(p99, float)
    assert 0 <= p50 <= p95 <= p99


def test_every_section_ran_or_was_skipped_cleanly(tiny: BenchOutput) -> None:
    assert tiny.ok, {k: v.get("error") for k, v in tiny.report["sections"].items()}
    assert set(tiny.report["sections"]) == set(SECTIONS) - {"streaming"}


def test_json_schema_machine_and_sources(tiny: BenchOutput) -> None:
    rep = json.loads(tiny.json_path.read_text())
    assert rep["schema"] == SCHEMA
    assert rep["command"] == "pytest tiny bench"
    m = rep["machine"]
    assert m["cpu_model"] and m["cores_usable"] >= 1
    assert set(m["packages"]) >= {"numpy", "onnxruntime", "mediapipe", "av", "aiortc"}
    assert m["packages"]["numpy"] == np.__version__
    assert "git_commit" in m
    assert rep["model"]["sha256_16"]
    assert rep["config"]["frames"] == 6 and rep["notes"][0] == "test configuration"
    for name in ("stage_latency", "throughput", "lookahead", "quality"):
        sec = rep["sections"][name]
        assert sec["status"] in ("ok", "skipped", "not available"), sec
        assert "section_wall_s" in sec
    for name in ("stage_latency", "throughput", "lookahead"):
        assert rep["sections"][name]["status"] == "ok"
        assert rep["sections"][name]["source"].startswith("rtdub.measure.bench.")


def test_stage_latency_percentiles_are_ordered(tiny: BenchOutput) -> None:
    sec = tiny.report["sections"]["stage_latency"]
    assert sec["stages"] == list(BENCH_STAGES)
    (run,) = [r for r in sec["runs"] if r["backend"] == "onnx"]
    assert (run["width"], run["height"]) == (320, 240)
    assert run["frames"] == 6 and run["faces"] > 0
    assert "dub_file" in run["source"]
    for stage in BENCH_STAGES:
        assert_ordered(run["stages_ms"][stage])
    if run["total_ms"] is not None:
        assert_ordered(run["total_ms"])
    # tensorrt is either measured or skipped with a reason
    names = {r["backend"] for r in sec["runs"]} | {s["backend"] for s in sec["skipped_backends"]}
    assert names == set(ALL_BACKENDS)
    assert all(s["reason"] for s in sec["skipped_backends"])
    samples = json.loads(tiny.samples_path.read_text())
    assert len(samples["stage_latency/onnx_320x240"]["stages_ms"]["generator"]) == 6


def test_throughput_comes_from_the_dub_runs(tiny: BenchOutput) -> None:
    sec = tiny.report["sections"]["throughput"]
    (run,) = [r for r in sec["runs"] if r["backend"] == "onnx"]
    assert run["frames"] == 8 and run["frames_per_s"] > 0 and run["x_realtime"] > 0
    assert any("skipped" in n for n in sec["notes"])  # no shared clips here


def test_lookahead_rows_latency_and_null_lse(tiny: BenchOutput) -> None:
    sec = tiny.report["sections"]["lookahead"]
    rows = sec["rows"]
    assert [r["lookahead_ms"] for r in rows] == [0.0, 120.0]
    for r in rows:
        assert r["LSE_C"] is None and r["LSE_D"] is None and r["LSE_reason"]
        assert r["AV_offset_per_clip"] == {} and r["LSE_clips"] == 0
        assert r["MOC"] is None  # no clips
        assert r["lip_closure_auc"] is None or 0.0 <= r["lip_closure_auc"] <= 1.0
        assert_ordered(r["compute_ms"])
        # the lookahead adds its own duration when the audio arrives just in time
        assert r["audio_wait_ms"] == pytest.approx(r["lookahead_ms"] + 25.0)
        assert r["added_latency_audio_just_in_time_ms"] == pytest.approx(
            r["audio_wait_ms"] + r["added_latency_audio_buffered_ms"]
        )
    assert "no clips" in sec["clips_note"]


def test_quality_skipped_cleanly_without_clips(tiny: BenchOutput) -> None:
    sec = tiny.report["sections"]["quality"]
    assert sec["status"] == "skipped"
    assert "no-clips-here" in sec["reason"]


def _streaming_only(out: Path) -> BenchConfig:
    return BenchConfig(out=out, sections=("streaming",), streaming_seconds=1.0)


def test_streaming_result_is_taken_from_the_engine_measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        "seconds": 1.0,
        "fps": {"dubbed": 24.9, "passthrough": 25.0},
        "glass_to_glass_ms": {"passthrough": {"p50": 40.0, "p95": 50.0, "p99": 60.0, "n": 20}},
        "added_latency_ms": {"p50": 20.0, "p95": 30.0, "p99": 35.0, "n": 20},
        "late_frames": 0,
        "dropped_frames": 1,
    }
    code = f"import json, sys; open(sys.argv[-1], 'w').write(json.dumps({fake!r}))"

    def command(seconds: float, out: Path) -> list[str]:
        return [sys.executable, "-c", code, "--out", str(out)]

    monkeypatch.setattr(sections, "streaming_command", command)
    res = run_bench(_streaming_only(tmp_path))
    sec = res.report["sections"]["streaming"]
    assert sec["status"] == "ok" and sec["result"] == fake
    assert sec["process"]["wall_s"] > 0
    md = res.markdown_path.read_text()
    assert "| added latency (dubbed - passthrough, per frame) | 20.0 | 30.0 | 35.0 | 20 |" in md
    monkeypatch.setattr(sections, "streaming_command", lambda s, o: [sys.executable, "-c", "raise SystemExit(3)"])
    res = run_bench(_streaming_only(tmp_path))
    assert res.report["sections"]["streaming"]["status"] == "error" and not res.ok


def test_markdown_and_pngs(tiny: BenchOutput) -> None:
    md = tiny.markdown_path.read_text()
    assert md.startswith("# rtdub bench")
    assert "## Per-stage latency" in md and "| generator |" in md and "**total**" in md
    assert "## Lookahead trade-off" in md and "null¹" in md
    assert "## Quality" in md and "skipped" in md
    names = {p.name for p in tiny.plots}
    assert names == {"latency_hist_onnx_320x240.png", "stage_bars.png", "lookahead.png"}
    for p in tiny.plots:
        assert p.parent == tiny.json_path.parent
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    # nothing but the reports lands in --out: no media
    assert not [p for p in tiny.json_path.parent.iterdir() if p.suffix in (".mp4", ".wav")]


def test_markdown_regenerates_from_the_json(tiny: BenchOutput) -> None:
    rep = json.loads(tiny.json_path.read_text())
    assert markdown(rep) == tiny.markdown_path.read_text()


def test_cli_parses_bench_options(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["bench", "--quick", "--out", str(tmp_path), "--resolutions", "320x240", "--sections", "quality,streaming"]
    )
    cfg = config_from_args(args)
    assert cfg.quick and cfg.out == tmp_path and cfg.resolutions == ((320, 240),)
    assert cfg.sections == ("quality", "streaming") and cfg.frames < 500 and cfg.expert is None
    cfg = config_from_args(build_parser().parse_args(["bench", "--expert", str(tmp_path)]))
    assert cfg.expert == tmp_path
    full = config_from_args(build_parser().parse_args(["bench"]))
    assert not full.quick and full.frames >= 500 and (640, 480) in full.resolutions and (1280, 720) in full.resolutions
    assert full.lookaheads_ms == (0.0, 40.0, 80.0, 120.0)


def test_percentiles_helper() -> None:
    p = percentiles(np.arange(1000.0))
    assert p["n"] == 1000 and p["p50"] == pytest.approx(499.5)
    assert_ordered(p)
    assert percentiles([])["p50"] is None


def test_protocol_scores_a_frozen_mouth_below_the_model_ceiling(talking_clip: Path) -> None:
    """The docs/design.md §5 protocol on a generated clip: every mode is scored on every frame, and
    the frozen mouth (no motion at all) has the lowest mouth-opening variation."""
    from rtdub.backends import BackendConfig, get_backend
    from rtdub.measure.evaluation import MODES, load_clip, reconstruct
    from rtdub.model import load_bundle

    bundle = load_bundle()
    backend = get_backend("onnx", bundle, BackendConfig(threads=1))
    clip = load_clip(talking_clip, bundle)
    scores = {mode: reconstruct(clip, mode, bundle, backend, 100.0).scores for mode in MODES}
    for s in scores.values():
        assert s["frames"] == s["tracked_out_of"] == len(clip.frames)
        assert 0 <= s["LMD"] < 20 and 0 < s["SSIM"] <= 1 and s["PSNR"] > 10


# --- LSE with a lip-sync expert ---------------------------------------------------------------


@pytest.fixture(scope="module")
def random_expert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised lip-sync expert, exported through engines/export_sync.py (its
    manifest has no training record and its folder no README: an unvalidated expert)."""
    torch = pytest.importorskip("torch")
    from engines.export_sync import export_bundle
    from training.syncnet import SyncConfig, SyncNet

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("syncnet")
    export_bundle(SyncNet(SyncConfig(width=8, embed=32)).eval(), out)
    return out


@pytest.fixture(scope="module")
def with_clip(
    tmp_path_factory: pytest.TempPathFactory, talking_clip: Path, random_expert: Path
) -> tuple[BenchOutput, Path]:
    out = tmp_path_factory.mktemp("bench_lse")
    clips = out / "clips"
    clips.mkdir()
    (clips / talking_clip.name).symlink_to(talking_clip)
    cfg = BenchConfig(
        out=out / "report",
        resolutions=((320, 240),),
        threads=1,
        expert=random_expert,
        clips=clips,
        lookaheads_ms=(0.0, 40.0),  # 40 ms (the default) is also the quality render: one render fewer
        closure_text="Bob may buy a big map.",
        sections=("lookahead", "quality"),
    )
    return run_bench(cfg, command="pytest bench with a clip"), clips / talking_clip.name


def assert_lse(r: Mapping[str, object]) -> None:
    for k in ("LSE_C", "LSE_D"):
        v = r[k]
        assert isinstance(v, float) and np.isfinite(v), (k, r)
    assert 0.0 <= r["LSE_C"] <= 2.0 and 0.0 <= r["LSE_D"] <= 2.1  # type: ignore[operator]
    assert r.get("LSE_reason") is None


def test_lse_is_measured_on_every_render(with_clip: tuple[BenchOutput, Path]) -> None:
    res, clip = with_clip
    assert res.ok, {k: v.get("error") for k, v in res.report["sections"].items()}
    la = res.report["sections"]["lookahead"]
    assert [r["lookahead_ms"] for r in la["rows"]] == [0.0, 40.0]
    for r in [*la["rows"], la["baselines"]["sync_ground_truth"], la["baselines"]["sync_frozen"]]:
        assert_lse(r)
        assert r["LSE_clips"] == 1 and set(r["AV_offset_per_clip"]) == {clip.name}
        off = r["AV_offset_per_clip"][clip.name]
        assert isinstance(off, int) and -15 <= off <= 15
    q = res.report["sections"]["quality"]
    assert set(q["per_clip"][clip.name]) == {"model", "true-units", "frozen"}
    for mode in ("model", "true-units", "frozen"):
        assert_lse(q["per_clip"][clip.name][mode])
        assert_lse(q["mean"][mode])
    # one clip: the mean is that clip, and the lookahead row at 40 ms is the quality render
    assert q["mean"]["model"]["LSE_C"] == pytest.approx(q["per_clip"][clip.name]["model"]["LSE_C"])
    assert la["rows"][1]["LSE_C"] == pytest.approx(q["mean"]["model"]["LSE_C"])
    assert q["ground_truth_sync"] == la["baselines"]["sync_ground_truth"]
    assert la["lse_scoring_wall_s"] > 0 and la["lse_scoring_wall_s"] == q["lse_scoring_wall_s"]


def test_ground_truth_row_is_what_rtdub_eval_measures(with_clip: tuple[BenchOutput, Path], random_expert: Path) -> None:
    """Same crops, windows and formulas as ``rtdub eval``: the clip scored against its own audio."""
    from rtdub.measure.avsync import SyncNetExpert
    from rtdub.measure.scoring import evaluate_files

    res, clip = with_clip
    ev = evaluate_files(clip, clip, None, SyncNetExpert(random_expert, threads=1))
    gt = res.report["sections"]["lookahead"]["baselines"]["sync_ground_truth"]
    assert gt["LSE_C"] == pytest.approx(ev.lse_c, abs=1e-6)
    assert gt["LSE_D"] == pytest.approx(ev.lse_d, abs=1e-6)
    assert gt["AV_offset_per_clip"][clip.name] == ev.av_offset_expert  # the expert alone, as bench


def test_expert_provenance_in_json_and_markdown(with_clip: tuple[BenchOutput, Path], random_expert: Path) -> None:
    res, clip = with_clip
    ex = json.loads(res.json_path.read_text())["expert"]
    assert ex["status"] == "loaded" and ex["root"] == str(random_expert)
    assert ex["sha256_16"]["video.onnx"] and ex["offset_accuracy"] == {} and ex["readme_status"] is None
    assert "no held-out AV-offset accuracy" in ex["assessment"] and "unvalidated" in ex["assessment"]
    md = res.markdown_path.read_text()
    assert f"- lip-sync expert: `{random_expert}`" in md and "lip-sync expert status:" in md
    assert "### Lip sync against the expert" in md and "**ground truth**" in md and "**frozen mouth**" in md
    assert "null" not in md.split("## Lookahead trade-off")[1]  # every LSE cell is a number
    assert markdown(json.loads(res.json_path.read_text())) == md
    assert {p.name for p in res.plots} == {"lookahead.png"}


def test_provenance_reports_a_recorded_offset_accuracy_and_the_readme_status(
    tmp_path: Path, random_expert: Path
) -> None:
    man = json.loads((random_expert / "manifest.json").read_text())
    man["training"] = {"step": 9000, "held_out": ["speaker_a"], "held_out_offset_within_1": 0.93}
    (tmp_path / "README.md").write_text("# expert\n\n**Status: trained for a day.**\nIt works.\n\n## More\n")
    info = expert_provenance(tmp_path, man)
    assert info["offset_accuracy"] == {"training.held_out_offset_within_1": 0.93}
    assert "0.93" in info["assessment"]
    assert info["readme_status"] == "Status: trained for a day. It works."
    del man["training"]["held_out_offset_within_1"]
    info = expert_provenance(tmp_path, man)
    assert "no held-out AV-offset accuracy" in info["assessment"] and "trained for a day" in info["assessment"]


def test_missing_default_expert_gives_null_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rtdub.measure.avsync

    monkeypatch.setattr(rtdub.measure.avsync, "default_expert_dir", lambda: tmp_path)
    cfg = BenchConfig(out=tmp_path / "out")
    ex, info = load_expert(cfg)
    assert ex is None and info["status"] == "absent" and "manifest.json" in info["reason"]
    ctx = Context(cfg, tmp_path, lambda m: None, expert=None, expert_info=info)
    row = _lse(ctx, {"a.mp4": None})
    assert row["LSE_C"] is None and row["LSE_D"] is None and "no lip-sync expert" in row["LSE_reason"]
    assert "none loaded" in "\n".join(_expert_md(info))


def test_cli_bad_expert_is_a_one_line_error(tmp_path: Path) -> None:
    from .test_cli import assert_one_line_error, run_cli

    out = tmp_path / "out"
    res = run_cli("bench", "--sections", "quality", "--expert", str(tmp_path), "--out", str(out))
    assert_one_line_error(res, tmp_path, "manifest.json")
    assert not out.exists()


def test_streaming_table_flags_host_steal() -> None:
    base = {"source": "loopbench", "result": {"added_latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "n": 9}}}
    noisy = {**base, "result": {**base["result"], "host_steal_pct": 11.5}}
    quiet = {**base, "result": {**base["result"], "host_steal_pct": 0.3}}
    assert any("steal" in line and "11.5 %" in line for line in _streaming_md(noisy))
    assert not any(line.startswith("**Note") for line in _streaming_md(quiet))
