"""Memory of the face tracker over a long run (no leak in the direct landmark path).

    python -m benchmarks.tracker_memory [--frames 45000] [--graph] [--json OUT]

Tracks a generated talking-head clip (the astronaut portrait with head motion, 100 frames
looped) for ``--frames`` frames (45 000 = 30 minutes at 25 fps) and reads the process's
resident set size every 5 000 frames. ``--graph`` tracks every frame through mediapipe's
graph instead of the landmark model run directly. Prints the RSS series and the growth from
frame 5 000 (after warm-up) to the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import write_json
from rtdub.face.tracker import FaceTracker, TrackerConfig
from rtdub.measure import samples


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="face tracker memory over a long run")
    p.add_argument("--frames", type=int, default=45000)
    p.add_argument("--graph", action="store_true", help="mediapipe's graph for every frame")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    frames = list(samples.head_motion(samples.portrait(), 100, 25.0, amplitude=3.0))
    series: list[tuple[int, float]] = []
    lost = 0
    t0 = time.perf_counter()
    with FaceTracker(TrackerConfig(direct=not args.graph)) as tracker:
        for i in range(args.frames):
            lost += tracker.track(frames[i % len(frames)], i / 25) is None
            if i % 5000 == 0:
                series.append((i, round(rss_mb(), 1)))
        series.append((args.frames, round(rss_mb(), 1)))
        direct = tracker.direct_frames
    after_warmup = next((r for i, r in series if i >= 5000), series[-1][1])
    result = {
        "frames": args.frames,
        "path": "graph" if args.graph else "direct",
        "direct_frames": direct,
        "lost_frames": lost,
        "seconds": round(time.perf_counter() - t0, 1),
        "rss_mb": series,
        "growth_mb_after_warmup": round(series[-1][1] - after_warmup, 1),
    }
    print(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
