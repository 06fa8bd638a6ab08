"""Long-run (soak) benchmark of the streaming engine: memory growth and A/V offset drift.

    python -m benchmarks.soak [--minutes 30] [--dub-file ../shared/media/audio/english_60s.wav]
                              [--out benchmarks/results]

Runs ``python -m rtdub.measure.loopbench`` (loopback WebRTC, 640×480 at 25 fps, a passthrough and a
dubbed session in one engine process, the client in another) for ``--minutes`` with the
dub file looped as the dubbed audio, and summarises what it reports:

- memory: the engine process's RSS, sampled every second; growth = the median of the last
  minute minus the median of minute 2 (after warm-up), and the peak;
- A/V offset: the engine's offset between the dubbed video and the dubbed audio it sends
  (video delay minus audio output delay), median per minute; drift = the largest minus the
  smallest per-minute median over the whole minutes of streaming after the first (warm-up);
- fps of the dubbed and passthrough streams per minute, as the client received them.

Writes ``soak.json`` and ``soak.md`` in ``--out`` (atomically). Targets (issue 4): growth
< 50 MB, drift < one frame (40 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdub import atomic
from rtdub.defaults import MEDIA_ENV, media_path

DEFAULT_DUB = media_path("audio", "english_60s.wav")  # under $RTDUB_MEDIA, or None
FRAME_MS = 40.0


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The soak figures from one loopbench result."""
    series = np.array(result["rss_mb"]["series"], np.float64).reshape(-1, 2)
    t, rss = series[:, 0], series[:, 1]
    second = rss[(t >= 60) & (t < 120)]
    last = rss[t >= t.max() - 60]
    base = float(np.median(second)) if second.size else float(rss[0])
    growth = float(np.median(last)) - base
    per_min = [float(v) for v in result["av_offset_ms"]["per_minute_median"]]
    # whole minutes of streaming only: minute k covers [60k, 60k + 60) s; the stream ends at
    # ``seconds``, and the samples after it (the teardown) are not part of the run
    whole = int(float(result.get("seconds", 60 * len(per_min))) // 60)
    settled = per_min[1:whole] if whole > 2 else per_min[:whole]
    drift = (max(settled) - min(settled)) if settled else float("nan")
    fps = {k: [round(c / 60.0, 2) for c in v] for k, v in result["frames_received_per_minute"].items()}
    full = {k: v[1:whole] if whole > 2 else v[:whole] for k, v in fps.items()}  # the warm-up minute left out
    return {
        "memory_mb": {
            "minute_2_median": round(base, 1),
            "last_minute_median": round(float(np.median(last)), 1),
            "growth": round(growth, 1),
            "peak": round(float(rss.max()), 1),
            "target_growth_below": 50.0,
            "met": bool(growth < 50.0),
        },
        "av_offset_ms": {
            "per_minute_median": per_min,
            "whole_minutes_used": f"2..{whole}" if whole > 2 else f"1..{whole}",
            "drift_after_first_minute": round(drift, 1),
            "target_drift_below": FRAME_MS,
            "met": bool(drift < FRAME_MS),
        },
        "fps_per_minute": fps,
        "fps_min_over_whole_minutes": {k: (min(v) if v else None) for k, v in full.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    s, r = report["summary"], report["result"]
    m, a = s["memory_mb"], s["av_offset_ms"]
    lines = [
        "# rtdub soak",
        "",
        f"- command: `{report['command']}`; {report['created']}; wall {report['wall_s']:.0f} s",
        f"- machine: {report['machine']}; load average at start {report['load_average_start']}",
        f"- source: rtdub.measure.loopbench ({r.get('processes')}); client sender: {r.get('client_sender')}",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| RSS growth, last minute vs minute 2 (MB) | {m['growth']:.1f} | < 50 {'✓' if m['met'] else '✗'} |",
        f"| RSS peak (MB) | {m['peak']:.1f} | |",
        f"| A/V offset drift, per-minute medians of whole minutes {a['whole_minutes_used']} (ms) | "
        f"{a['drift_after_first_minute']:.1f} | "
        f"< 40 {'✓' if a['met'] else '✗'} |",
        f"| dubbed fps, lowest whole minute | {s['fps_min_over_whole_minutes'].get('dubbed')} | |",
        f"| passthrough fps, lowest whole minute | {s['fps_min_over_whole_minutes'].get('passthrough')} | |",
        f"| added latency p50 / p95 / p99 (ms) | {r['added_latency_ms'].get('p50')} / "
        f"{r['added_latency_ms'].get('p95')} / {r['added_latency_ms'].get('p99')} | |",
        "",
        f"- A/V offset per minute (ms): {a['per_minute_median']}",
        f"- dubbed fps per minute: {s['fps_per_minute'].get('dubbed')}",
        f"- modes: {json.dumps(r.get('modes'))}; late frames {r.get('late_frames')}; "
        f"dropped {json.dumps(r.get('dropped_frames'))}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--dub-file", type=Path, default=DEFAULT_DUB)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--keep", type=Path, default=None, help="also keep rtdub.measure.loopbench's JSON here")
    p.add_argument("--from-json", type=Path, default=None, help="summarise a kept rtdub.measure.loopbench JSON")
    args = p.parse_args(argv)
    if args.from_json is None and (args.dub_file is None or not args.dub_file.is_file()):
        where = args.dub_file or f"${MEDIA_ENV}/audio/english_60s.wav (unset)"
        print(f"soak: dub file not found: {where} (give --dub-file or set {MEDIA_ENV})", file=sys.stderr)
        return 2
    if args.minutes < 3:
        print("soak: --minutes must be at least 3 (growth compares minute 2 with the last)", file=sys.stderr)
        return 2
    for flag, path in (("--out", args.out / "soak.json"), ("--keep", args.keep)):
        if path is not None and (problem := atomic.writable_dir(path)) is not None:
            print(f"soak: {flag}: {problem}", file=sys.stderr)  # now, not after the run
            return 2
    load = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    if args.from_json is not None:  # summarise an earlier run's loopbench output
        result = json.loads(args.from_json.read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.keep or Path(tmp) / "loop.json"
            cmd = [sys.executable, "-m", "rtdub.measure.loopbench", "--seconds", f"{args.minutes * 60:g}"]
            cmd += ["--dub-file", str(args.dub_file), "--out", str(out)]
            res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
            if res.returncode != 0 or not out.is_file():
                tail = " | ".join(res.stderr.strip().splitlines()[-2:])
                print(f"soak: rtdub.measure.loopbench failed ({res.returncode}): {tail}", file=sys.stderr)
                return 1
            result = json.loads(out.read_text())
    wall = time.perf_counter() - t0
    from rtdub.measure.bench.machine import machine_info

    info = machine_info()
    report = {
        "command": "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": wall,
        "machine": f"{info.get('cpu_model')}, {info.get('cores_usable')} usable cores",
        "load_average_start": load,
        "dub_file": args.dub_file.name if args.dub_file is not None else None,
        "result": result,
        "summary": summarise(result),
    }
    atomic.write_text(args.out / "soak.json", json.dumps(report, indent=1) + "\n")
    atomic.write_text(args.out / "soak.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
