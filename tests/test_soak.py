"""benchmarks/soak.py: the summary arithmetic and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import soak


def _result(minutes: int, leak_mb_per_min: float, offsets: list[float]) -> dict[str, object]:
    series = [[float(t), 450.0 + leak_mb_per_min * t / 60] for t in range(1, minutes * 60 + 1)]
    return {
        "seconds": minutes * 60,
        "rss_mb": {"series": series},
        "av_offset_ms": {"per_minute_median": offsets},
        "frames_received_per_minute": {"dubbed": [1200] + [1440] * (minutes - 1) + [20], "passthrough": [1500] * 3},
        "added_latency_ms": {"p50": 40.0, "p95": 80.0, "p99": 99.0},
        "processes": "x",
        "client_sender": "y",
    }


def test_summary_flags_growth_and_drift() -> None:
    ok = soak.summarise(_result(4, 0.5, [90.0, 3.0, -5.0, 10.0, -70.0]))
    assert ok["memory_mb"]["growth"] == pytest.approx(0.5 * 2, abs=0.05)  # minute 2 median (t=90 s) to last (t=210 s)
    assert ok["memory_mb"]["met"] and ok["av_offset_ms"]["met"]
    # the warm-up minute and the teardown after the last whole minute are left out
    assert ok["av_offset_ms"]["drift_after_first_minute"] == 15.0
    assert ok["fps_min_over_whole_minutes"]["dubbed"] == 24.0  # partial first/last minutes left out
    bad = soak.summarise(_result(10, 8.0, [0.0, 0.0, 30.0, -20.0] + [0.0] * 6))
    assert bad["memory_mb"]["growth"] > 50 and not bad["memory_mb"]["met"]
    assert bad["av_offset_ms"]["drift_after_first_minute"] == 50.0 and not bad["av_offset_ms"]["met"]


def test_from_json_writes_both_outputs(tmp_path: Path) -> None:
    src = tmp_path / "loop.json"
    src.write_text(json.dumps(_result(4, 0.0, [1.0, 2.0, 3.0])))
    assert soak.main(["--from-json", str(src), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "soak.json").read_text())
    assert report["summary"]["memory_mb"]["growth"] == 0.0
    assert "RSS growth" in (tmp_path / "out" / "soak.md").read_text()


def test_missing_dub_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert soak.main(["--dub-file", str(tmp_path / "nope.wav"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("soak: dub file not found") and "\n" not in err


def test_unwritable_keep_is_refused_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 30-minute run must not be lost at the end because its output folder is missing."""
    wav = tmp_path / "dub.wav"
    wav.write_bytes(b"RIFF")  # only its existence is checked before the run
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["--dub-file", str(wav), "--out", str(tmp_path / "out"), "--keep", str(blocker / "loop.json")]
    assert soak.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("soak: --keep:") and "\n" not in err
