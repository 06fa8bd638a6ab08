"""Causal choice of the identity reference.

The generator needs a crop of the same person that does not carry the mouth of the frame it
renders (docs/design.md §5). The selector keeps a bounded history of past crops and picks the most
frontal one whose mouth opening is closest to a target, among those at least ``min_age``
seconds old; it re-picks now and then, and only switches when the new candidate is clearly
better, to avoid flicker.

The target is a quantile of the openings in the history (``open_quantile``). 0 asks for the
most closed mouth: the generator then opens it by warping, which stretches the lips and has
no teeth to show. A higher quantile gives a reference with the speaker's teeth in it, which
the generator closes by warping the lips over them (training/ABLATION.md measures both).

Each candidate may also keep a high-resolution crop of the same region (rtdub/render/hires.py): the
generator sees the S px crop, the hi-res compositing warps the large one. Callers ask
:meth:`ReferenceSelector.wants` first, so the large crop is only made for frames it keeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..face.lipunits import inner_gap

NOSE_TIP = 1
NOSE_TIP_X = 0.0064  # canonical x of the nose tip on a frontal face


@dataclass(frozen=True)
class ReferenceConfig:
    min_age: float = 1.0  # s: never a frame closer than this to the frame being rendered
    history: float = 10.0  # s of candidates kept; older ones are dropped first
    sample_every: float = 0.1  # s between stored candidates
    refresh: float = 2.0  # s between re-picks
    switch_margin: float = 0.01  # score a new pick must win by
    open_quantile: float = 0.5  # target opening: this quantile of the history's (0: most closed)

    def __post_init__(self) -> None:
        if not 0.0 <= self.open_quantile <= 1.0:
            raise ValueError(f"open_quantile must be in [0, 1], got {self.open_quantile}")


YAW_WEIGHT = 0.3  # cost of a turned head, per canonical unit of nose offset


@dataclass(frozen=True)
class Candidate:
    time: float
    gap: float  # inner-lip opening, canonical units (>= 0)
    yaw: float  # |nose tip x - frontal|, canonical units
    crop: np.ndarray  # (S, S, 3) uint8
    hires: np.ndarray | None = None  # (R, R, 3) uint8 crop of the same region, R >= S

    def score(self, target_gap: float) -> float:
        """Lower is better: an opening away from the target and a turned head both cost."""
        return abs(self.gap - target_gap) + YAW_WEIGHT * self.yaw


def pose(canonical: np.ndarray) -> tuple[float, float]:
    """The inner-lip opening (>= 0) and the yaw of a face, as a :class:`Candidate` keeps them."""
    return max(0.0, inner_gap(canonical)), abs(float(canonical[NOSE_TIP, 0]) - NOSE_TIP_X)


class ReferenceSelector:
    def __init__(self, config: ReferenceConfig | None = None) -> None:
        self.config = config or ReferenceConfig()
        max_items = int(np.ceil(self.config.history / max(self.config.sample_every, 1e-3))) + 2
        self._cands: deque[Candidate] = deque(maxlen=max_items)  # drop policy: oldest first
        self._current: Candidate | None = None
        self._picked_at = -np.inf

    def reset(self) -> None:
        self._cands.clear()
        self._current = None
        self._picked_at = -np.inf

    @property
    def current(self) -> Candidate | None:
        return self._current

    def wants(self, t: float) -> bool:
        """Whether :meth:`observe` at ``t`` would store the frame as a candidate."""
        return not self._cands or t - self._cands[-1].time >= self.config.sample_every

    def observe(self, t: float, crop: np.ndarray, canonical: np.ndarray, hires: np.ndarray | None = None) -> None:
        """Offer the crop of the frame at ``t`` (call once per tracked frame, in time order),
        with its high-resolution crop when the caller composites at a higher resolution."""
        c = self.config
        if not self.wants(t):
            return
        big = None if hires is None else np.array(hires, copy=True)
        gap, yaw = pose(canonical)
        self._cands.append(Candidate(t, gap, yaw, crop.copy(), big))
        while self._cands and t - self._cands[0].time > c.history:
            self._cands.popleft()

    def reference(self, t: float) -> Candidate | None:
        """The reference for rendering the frame at ``t``."""
        c = self.config
        if not self._cands:
            return self._current
        due = t - self._picked_at >= c.refresh
        stale = self._current is None or t - self._current.time > c.history or self._current.time > t
        if not (due or stale):
            return self._current
        old = [k for k in self._cands if t - k.time >= c.min_age]
        if not old:
            # bootstrap: nothing is old enough yet; use the oldest frame seen
            if self._current is None:
                self._current = self._cands[0]
            return self._current
        target = float(np.quantile([k.gap for k in self._cands], c.open_quantile)) if c.open_quantile > 0 else 0.0
        best = min(old, key=lambda k: k.score(target))
        young = self._current is not None and t - self._current.time < c.min_age
        if stale or young or best.score(target) < self._current.score(target) - c.switch_margin:  # type: ignore[union-attr]
            self._current = best
        self._picked_at = t
        return self._current
