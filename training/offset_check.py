"""A second opinion on a clip's AV offset, independent of the lip-sync expert.

    python -m training.offset_check --a2l runs/a2l_db/teacher --basis engines/default \
        --data data2/clips --data data2/train --match '*' [--max-shift 8] [--json OUT]

The audio-to-lip stage predicts the mouth opening (the inner-lip gap unit) from the audio
alone; the tracker measured it on the video. For each shift k in −K…K frames the prediction
is made at the frame times + k / fps (the audio read k frames late) and correlated with the
measured gap. An in-sync clip peaks at k = 0; a clip whose audio lags its video by d frames
peaks at k = d, and the lip-sync expert should report an AV offset of −d for it
(syncnet_python's sign, as in training/eval_sync.py).

It is a weak detector (correlations of 0.3–0.7 of one number per frame, not a pixel model),
but it has no identity-specific pixels to be fooled by. Use a non-causal teacher (``--arch
teacher``): it sees audio on both sides of the frame, so it has no lookahead bias. The
confidence is the peak minus the median of the curve (as syncnet_python's); a peak at the
edge of the search or a confidence under ``--min-confidence`` is reported as undecided.
Prints one line per clip; ``--json`` writes the curves.

``--asr`` replaces the audio-to-lip model by recognised phones (training/recogniser.py:
pocketsphinx's en-us model, trained on other speech than any clip here): each phone's visual
class (lips closed for /p b m/, open for open vowels, ...) predicts the mean inner gap that
class has on the real ``--fit`` clips (z-scored per clip; the held-out identity excluded). No
model trained on this project's data times anything, so its lean is not the expert's.

    python -m training.offset_check --asr --basis engines/default --data data2/clips --fit data2/train

Its ``--json`` readings of the training clips are what ``train_sync --audio-offsets`` uses to
read clips that are out of sync at their offset (engines/syncnet/README.md, session 9).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .common import pearson
from .data import Clip, attach_units, load_basis, load_dir
from .phones import VISEME_CLASSES, PhoneSegment, viseme_class

Predictor = Callable[[Clip, np.ndarray], np.ndarray]  # clip, times (s) -> predicted gap per time
SegmentSource = Callable[[Clip], list[PhoneSegment]]  # a clip's recognised phones


@dataclass(frozen=True)
class OffsetCheck:
    clip: str
    shift: int  # frames the audio is read late at the peak (positive: the clip's audio lags)
    peak: float  # correlation at the peak
    at_zero: float  # correlation with the audio as it is
    confidence: float  # peak − median of the curve
    decided: bool
    curve: dict[int, float]


def check(
    clip: Clip, gap: np.ndarray, predict: Predictor, max_shift: int = 8, min_confidence: float = 0.1
) -> OffsetCheck:
    """Correlation of the predicted and measured gap (``gap``, per frame) over audio shifts."""
    valid = clip.valid & np.isfinite(gap)
    curve = {
        k: pearson(predict(clip, clip.times + k / clip.fps)[valid], gap[valid])
        for k in range(-max_shift, max_shift + 1)
    }
    best = max(curve, key=lambda k: curve[k])
    conf = curve[best] - float(np.median(list(curve.values())))
    decided = abs(best) < max_shift and conf >= min_confidence
    return OffsetCheck(clip.name, best, curve[best], curve[0], conf, decided, curve)


def a2l_predictor(run: Path) -> Predictor:
    """The gap unit predicted by a trained audio-to-lip run (torch), at lookahead 0."""
    from .a2l_runs import load_run, predict_mel

    model = load_run(run)

    def predict(clip: Clip, times: np.ndarray) -> np.ndarray:
        return predict_mel(model, clip.mel, times, 0.0)[:, -1]

    return predict


def phone_classes(segments: list[PhoneSegment], times: np.ndarray) -> np.ndarray:
    """The visual class (training.phones.VISEME_CLASSES) of the phone sounding at each time;
    0 (pause) outside every segment."""
    out = np.zeros(len(times), np.int64)
    for s in segments:
        out[(times >= s.start) & (times < s.end)] = viseme_class(s.phone)
    return out


def asr_predictor(fit: list[Clip], fit_gaps: list[np.ndarray], segments: SegmentSource) -> Predictor:
    """Predicts the gap from the recognised phones: the mean z-scored gap of the phone's
    visual class on the ``fit`` clips (at their own times); a class never seen there gets 0."""
    n = len(VISEME_CLASSES)
    total, count = np.zeros(n), np.zeros(n)
    for c, g in zip(fit, fit_gaps, strict=True):
        ok = c.valid & np.isfinite(g)
        if ok.sum() < 2:
            continue
        z = (g[ok] - g[ok].mean()) / max(float(g[ok].std()), 1e-9)
        cls = phone_classes(segments(c), c.times[ok])
        np.add.at(total, cls, z)
        np.add.at(count, cls, 1)
    means = np.where(count > 0, total / np.maximum(count, 1), 0.0)

    def predict(clip: Clip, times: np.ndarray) -> np.ndarray:
        return means[phone_classes(segments(clip), times)]

    return predict


def recognised_segments() -> SegmentSource:
    """Phone segments of a clip's audio by pocketsphinx, recognised once per clip."""
    from .recogniser import Recogniser

    rec = Recogniser()
    cache: dict[str, list[PhoneSegment]] = {}

    def segments(clip: Clip) -> list[PhoneSegment]:
        if clip.name not in cache:
            cache[clip.name] = rec.phones(clip.wav)[0]
        return cache[clip.name]

    return segments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="AV offset of prepared clips from an audio-to-lip model or recognised phones"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--a2l", type=Path, help="trained audio-to-lip run (a teacher is best)")
    src.add_argument("--asr", action="store_true", help="recognised phones (pocketsphinx en-us) instead")
    p.add_argument("--fit", type=Path, default=Path("data2/train"), help="--asr: clips the class means come from")
    p.add_argument("--fit-holdout", default="*feifeili*", help="--asr: fit clips left out (glob)")
    p.add_argument("--basis", type=Path, required=True, help="unit basis: the run's or a bundle's")
    p.add_argument("--data", type=Path, action="append", required=True, help="prepared shards (repeatable)")
    p.add_argument("--match", default="*", help="clip names (glob)")
    p.add_argument("--max-shift", type=int, default=8)
    p.add_argument("--min-confidence", type=float, default=0.1, help="peak − median below this: undecided")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    for d in [args.a2l or args.fit, args.basis, *args.data]:
        if not d.exists():
            print(f"offset_check: error: {d} does not exist", file=sys.stderr)
            return 2
    import torch

    torch.set_num_threads(1)
    clips = [c for d in args.data for c in load_dir(d) if c.has_audio and fnmatch.fnmatch(c.name, args.match)]
    if not clips:
        print("offset_check: error: no clip with audio matches", file=sys.stderr)
        return 2
    basis = load_basis(args.basis)
    attach_units(clips, basis)
    if args.asr:
        fit = [
            c for c in load_dir(args.fit) if c.has_audio and c.real and not fnmatch.fnmatch(c.name, args.fit_holdout)
        ]
        attach_units(fit, basis)
        gaps = []
        for c in fit:
            assert c.raw_units is not None  # attach_units sets it
            gaps.append(c.raw_units[:, -1])
        predict = asr_predictor(fit, gaps, recognised_segments())
    else:
        predict = a2l_predictor(args.a2l)
    results = []
    for c in clips:
        assert c.raw_units is not None
        r = check(c, c.raw_units[:, -1], predict, args.max_shift, args.min_confidence)
        results.append(r)
        verdict = f"audio lags {r.shift:+d} frames" if r.decided else "undecided"
        print(
            f"{r.clip}: peak {r.peak:.3f} at shift {r.shift:+d} (confidence {r.confidence:.3f}),"
            f" {r.at_zero:.3f} at 0: {verdict}"
        )
    if args.json:
        tmp = args.json.with_name(args.json.name + ".part")
        tmp.write_text(json.dumps([asdict(r) for r in results], indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
