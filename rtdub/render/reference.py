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

An enrolled bundle (``rtdub enroll``) carries a bank of the person's own references (closed,
mid-open with teeth, open), and :class:`BankSelector` replaces the causal pick: from the first
frame on, it takes the bank entry whose mouth opening is closest to the target's, i.e. to a
quantile (``open_quantile``) of the inner-lip gap of the units the drive asked for over the last
``bank_window`` seconds, re-picked every ``refresh`` seconds and switched only when the new
entry is closer by ``bank_margin`` (z units), so that the reference does not flicker between
frames. The stream's own frames are not kept. Colour is matched to the live frame at
paste time, as for any reference (rtdub/render/compositor.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..exceptions import ModelError
from ..face.lipunits import inner_gap
from ..model import BankReference, ModelBundle

NOSE_TIP = 1
NOSE_TIP_X = 0.0064  # canonical x of the nose tip on a frontal face
BANK_USES = ("always", "start")


@dataclass(frozen=True)
class ReferenceConfig:
    min_age: float = 1.0  # s: never a frame closer than this to the frame being rendered
    history: float = 10.0  # s of candidates kept; older ones are dropped first
    sample_every: float = 0.1  # s between stored candidates
    refresh: float = 2.0  # s between re-picks
    switch_margin: float = 0.01  # score a new pick must win by
    open_quantile: float = 0.5  # target opening: this quantile of the history's (0: most closed)
    bank_window: float = 2.0  # s of target units an enrolled bundle's bank choice follows
    bank_margin: float = 0.3  # z units of inner-lip gap a new bank entry must be closer by
    # an enrolled bundle's bank: "always", or "start": until the stream has a frame min_age old
    bank_use: str = "always"

    def __post_init__(self) -> None:
        if not 0.0 <= self.open_quantile <= 1.0:
            raise ValueError(f"open_quantile must be in [0, 1], got {self.open_quantile}")
        if self.bank_use not in BANK_USES:
            raise ValueError(f"bank_use must be one of {BANK_USES}, got {self.bank_use!r}")


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

    def reference(self, t: float, units: np.ndarray | None = None) -> Candidate | None:
        """The reference for rendering the frame at ``t`` (``units``, the frame's target units,
        are not used: the causal pick follows the stream's own mouth)."""
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


def _read_rgb(path: Path, size: int | None) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[0] != img.shape[1]:
        raise ModelError(f"{path}: not a square colour image")
    if size is not None and img.shape[0] != size:
        raise ModelError(f"{path}: {img.shape[0]} px, the bundle's crops are {size} px")
    return np.ascontiguousarray(img[:, :, ::-1])


def load_bank(references: Sequence[BankReference], crop_size: int) -> tuple[Candidate, ...]:
    """The bank's crops as candidates (distinct negative times: none is a stream frame)."""
    out = []
    for k, r in enumerate(references):
        crop = _read_rgb(r.crop_path, crop_size)
        hires = _read_rgb(r.hires_path, None) if r.hires_path is not None else None
        if hires is not None and hires.shape[0] < crop_size:
            raise ModelError(f"{r.hires_path}: smaller than the bundle's {crop_size} px crops")
        out.append(Candidate(-1.0 - k, r.gap, r.yaw, crop, hires))
    return tuple(out)


class BankSelector:
    """The reference from an enrolled person's bank, chosen by the target units' opening
    (module docstring); the same interface as :class:`ReferenceSelector`. Candidates' ``gap``
    is the z-scored inner-lip gap, the last unit."""

    def __init__(self, bank: Sequence[Candidate], config: ReferenceConfig | None = None) -> None:
        if not bank:
            raise ValueError("an empty reference bank")
        self.config = config or ReferenceConfig()
        self.bank = tuple(bank)
        self._targets: deque[tuple[float, float]] = deque()
        self._current: Candidate | None = None
        self._picked_at = -np.inf
        # bank_use "start": the causal pick takes over once the stream has an old enough frame
        self._stream = ReferenceSelector(self.config) if self.config.bank_use == "start" else None
        self._first_t: float | None = None

    def reset(self) -> None:
        self._targets.clear()
        self._current = None
        self._picked_at = -np.inf
        self._first_t = None
        if self._stream is not None:
            self._stream.reset()

    @property
    def current(self) -> Candidate | None:
        return self._current

    def _streaming(self, t: float) -> bool:
        """Whether the causal pick serves the frame at ``t`` (bank_use "start", after min_age)."""
        return self._stream is not None and self._first_t is not None and t - self._first_t >= self.config.min_age

    def wants(self, t: float) -> bool:
        return self._stream is not None and self._stream.wants(t)  # "always": never a stream frame

    def observe(self, t: float, crop: np.ndarray, canonical: np.ndarray, hires: np.ndarray | None = None) -> None:
        if self._first_t is None:
            self._first_t = t
        if self._stream is not None:
            self._stream.observe(t, crop, canonical, hires)

    def reference(self, t: float, units: np.ndarray | None = None) -> Candidate | None:
        """The bank entry for the frame at ``t`` whose target units are ``units`` (with
        bank_use "start", the causal pick once the stream has a frame min_age old)."""
        if self._stream is not None and self._streaming(t):
            self._current = self._stream.reference(t)
            return self._current
        c = self.config
        if units is not None:
            self._targets.append((t, float(units[-1])))
        while self._targets and t - self._targets[0][0] > c.bank_window:
            self._targets.popleft()
        if self._current is not None and t - self._picked_at < c.refresh:
            return self._current
        gaps = [g for _, g in self._targets]
        target = float(np.quantile(gaps, c.open_quantile)) if gaps else 0.0
        best = min(self.bank, key=lambda k: k.score(target))
        cur = self._current
        if cur is None or best.score(target) < cur.score(target) - c.bank_margin:
            self._current = best
        self._picked_at = t
        return self._current


def make_selector(bundle: ModelBundle, config: ReferenceConfig) -> ReferenceSelector | BankSelector:
    """The bank of an enrolled bundle, else the causal pick from the stream."""
    if bundle.references:
        return BankSelector(load_bank(bundle.references, bundle.crop_size), config)
    return ReferenceSelector(config)
