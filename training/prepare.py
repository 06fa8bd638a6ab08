"""Turn a folder of talking-head videos into training shards: aligned crops, landmarks, audio, mel.

    python -m training.prepare SRC_DIR OUT_DIR [--size 96] [--workers 2]

One shard (``OUT_DIR/<clip>.npz``) per video, written atomically; shards that exist are
skipped, so an interrupted run resumes where it stopped. Any layout works as long as the
videos carry their own audio: a flat folder (../shared/media/train), LRS2's
``main/<speaker>/<utt>.mp4`` tree or HDTF's ``<clip>.mp4`` files; every ``*.mp4``, ``*.mov``,
``*.mkv``, ``*.webm`` and ``*.avi`` below SRC_DIR is used and the shard name keeps its
relative path (``/`` becomes ``__``).

Shard content:
    crops    (N, S, S, 3) uint8   aligned face crops (align.py canonical frame)
    canon    (N, 468, 2)  float32 landmarks in canonical units (NaN where no face)
    times    (N,)         float64 frame times in seconds
    valid    (N,)         bool    a face was found
    wav      (M,)         float32 16 kHz mono, as recorded (training normalises it on load,
                                  so a change of the normaliser needs no new shards)
    fps      ()           float   average frame rate
    matrix   (N, 2, 3)    float32 the alignment, frame -> crop (training/shards.py)
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from rtdub.exceptions import InputError

from .shards import prepare_clip  # the per-clip work, a library module (rtdub enroll uses it too)

logger = logging.getLogger(__name__)
VIDEO_EXT = {".mp4", ".mov", ".mkv", ".webm", ".avi"}


def shard_name(src: Path, root: Path) -> str:
    rel = src.relative_to(root).with_suffix("")
    return "__".join(rel.parts)


def _worker(args: tuple[str, str, int]) -> tuple[str, dict[str, float] | str]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    src, dst, size = args
    try:
        return src, prepare_clip(Path(src), Path(dst), size)
    except InputError as exc:
        return src, f"skipped: {exc}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=96, help="crop side in pixels")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--glob", default="*", help="only videos whose file name matches")
    args = p.parse_args(argv)
    if not args.src.is_dir():
        print(f"prepare: error: {args.src}: not a directory", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    videos = sorted(v for v in args.src.rglob(args.glob) if v.suffix.lower() in VIDEO_EXT and v.is_file())
    jobs = []
    for v in videos:
        dst = args.out / f"{shard_name(v, args.src)}.npz"
        if not dst.exists():
            jobs.append((str(v), str(dst), args.size))
    print(f"{len(videos)} videos, {len(videos) - len(jobs)} already prepared", file=sys.stderr)
    failed = 0
    # spawn, not fork: a parent that already runs mediapipe threads must not be forked
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=ctx) as pool:
        futs = [pool.submit(_worker, j) for j in jobs]
        for fut in tqdm(as_completed(futs), total=len(futs), desc="prepare", unit="clip"):
            src, res = fut.result()
            if isinstance(res, str):
                failed += 1
                tqdm.write(f"{src}: {res}")
            else:
                tqdm.write(f"{src}: {res['faces']}/{res['frames']} faces, {res['seconds']:.1f}s audio")
    return 1 if failed and failed == len(jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
