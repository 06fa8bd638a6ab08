"""``rtdub enroll``: a person-specific model bundle from a few minutes of their own video.

The work is training/enroll.py's (torch, the ``train`` extra, and the source tree's training
package); this module is its front end: the arguments, the checks that need no torch, a
progress bar with an ETA on a terminal, SIGTERM handled like Ctrl-C (the fine-tune saves a
checkpoint, the output is never half written, the same command resumes)."""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from ..exceptions import InputError
from ..model import SOURCE_ROOT

EXAMPLES = """\
examples:
  rtdub enroll --video me.mp4 -o models/me
  rtdub enroll --video me.mp4 --video me_again.mp4 -o models/me --minutes 15
  rtdub dub --video talk.mp4 --audio dubbed.wav -o dubbed.mp4 --model models/me
"""
TRAIN_EXTRA = "pip install 'rtdub[train]'"


def add_enroll_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "enroll",
        help="train a model of one person from a few minutes of their own video",
        description="Enrol a person: fine-tune the generic model on a few minutes of their own "
        "talking-head video (one face, facing the camera, about 60 s or more; the last 30 % of each "
        "recording is held back to measure the result) and write a model bundle that any command "
        "takes with --model. Needs the training extra (torch). An interrupted run resumes when the "
        "same command is given again.",
        epilog=EXAMPLES,
    )
    p.add_argument("--video", required=True, type=Path, action="append", help="a recording of the person (repeat)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the bundle folder to write")
    p.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="fine-tuning time in minutes (default 5); longer fits the person's pixels more closely but, as "
        "measured so far, can also damp the mouth's motion (benchmarks/results/enroll_eval.md)",
    )
    p.add_argument("--base", default="default", help="the generic bundle to start from (a folder or a shipped name)")
    p.add_argument(
        "--eval-seconds", type=float, default=12.0, help="held-back seconds scored before and after (0: none)"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_enroll)


def _source_tree_on_path() -> None:
    """An editable install (``make venv``, ``pip install -e``) maps only the rtdub package, so
    the ``rtdub`` command cannot import the checkout's training/ and engines/: put the
    checkout's root on sys.path when it has them (an installed wheel has no such root)."""
    root = SOURCE_ROOT
    if (root / "training" / "__init__.py").is_file() and (root / "engines" / "__init__.py").is_file():
        if str(root) not in sys.path:
            sys.path.append(str(root))


def _missing_training() -> str | None:
    """Why enrolment cannot run here (None: it can)."""
    _source_tree_on_path()
    if importlib.util.find_spec("torch") is None:
        return f"rtdub enroll needs the training extra (torch): {TRAIN_EXTRA}"
    if importlib.util.find_spec("training") is None or importlib.util.find_spec("engines") is None:
        return "rtdub enroll needs rtdub's source tree (its training/ and engines/ packages): pip install -e '.[train]'"
    return None


class BarProgress:
    """One tqdm bar per stage of the enrolment, with its ETA; nothing off a terminal."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self._bar: Any = None

    def start(self, stage: str, total: float, unit: str) -> None:
        from tqdm import tqdm

        from ..quiet import stderr_columns

        self.finish()
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}{postfix}]"
        self._bar = tqdm(
            total=total, desc=stage, disable=not self.show, file=sys.stderr, ncols=stderr_columns(), bar_format=fmt
        )

    def advance(self, done: float, info: str = "") -> None:
        if self._bar is None:
            return
        self._bar.update(done - self._bar.n)
        if info:
            self._bar.set_postfix_str(info, refresh=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def abandon(self) -> None:
        if self._bar is not None:
            self._bar.leave = False
            self.finish()


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_enroll(args: argparse.Namespace) -> int:
    problem = _missing_training()
    if problem is not None:
        print(f"rtdub: error: {problem}", file=sys.stderr)
        return 2
    if args.minutes <= 0:
        raise InputError("--minutes", f"must be > 0, got {args.minutes}")
    if args.threads < 1:
        raise InputError("--threads", f"must be >= 1, got {args.threads}")
    for v in args.video:
        if not v.is_file():
            raise InputError(str(v), "no such file")
    from training.enroll import EnrollConfig, Source, enroll, work_dir

    from ..quiet import stderr_is_terminal

    cfg = EnrollConfig(minutes=args.minutes, eval_seconds=args.eval_seconds, threads=args.threads)
    bars = BarProgress(show=not args.quiet and stderr_is_terminal())
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        res = enroll([Source(v, 1.0 - cfg.test_fraction) for v in args.video], args.output, args.base, cfg, bars)
    except KeyboardInterrupt:
        bars.abandon()
        print(
            f"rtdub: interrupted: nothing written to {args.output}; the same command resumes "
            f"(work kept in {work_dir(args.output)})",
            file=sys.stderr,
        )
        return 130
    except BaseException:
        bars.abandon()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    bars.finish()
    print(f"wrote {res.output} in {res.seconds / 60:.1f} min")
    en = res.manifest["enrolment"]
    usable = sum(s["train_s"] for s in en["sources"])
    print(f"trained on {usable:.0f} s of usable face, {en['recipe']['steps_done']} steps")
    metrics = en.get("metrics", {})
    for mode in ("true-units", "model"):
        if mode in metrics.get("before", {}) and mode in metrics.get("after", {}):
            b, a = metrics["before"][mode], metrics["after"][mode]
            cells = "  ".join(f"{k} {b[k]:.3f} -> {a[k]:.3f}" for k in ("LMD", "MOC", "PSNR", "SSIM", "sharpness"))
            print(f"held-back {metrics['seconds']:.0f} s, {mode}: {cells}")
    print(f"use it: rtdub dub --model {res.output} ...")
    return 0
