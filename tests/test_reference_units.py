"""Identity reference selection (causal, neutral, never the target's own mouth), lip units,
and the silent-audio closed-mouth rule."""

from __future__ import annotations

import numpy as np
import pytest

from rtdub import audio
from rtdub.backends import get_backend
from rtdub.drive.audio import AudioDriveConfig, AudioStage
from rtdub.face import align
from rtdub.face.lipunits import GAP_PAIRS, LipBasis, UnitStats, inner_gap, inner_gap_batch, lip_points
from rtdub.model import load_bundle
from rtdub.render.reference import ReferenceConfig, ReferenceSelector

from .factories import speechlike


def face(gap: float, yaw: float = 0.0) -> np.ndarray:
    """Canonical (468, 2) landmarks with a given inner-lip gap and nose offset."""
    c = np.zeros((468, 2))
    c[align.RIGID_IDX] = align.RIGID_PTS
    c[GAP_PAIRS[:, 0], 1] = 0.78
    c[GAP_PAIRS[:, 1], 1] = 0.78 + gap
    c[1, 0] += yaw
    return c


def test_reference_is_old_enough_and_prefers_a_closed_frontal_mouth() -> None:
    sel = ReferenceSelector(
        ReferenceConfig(min_age=1.0, history=10.0, sample_every=0.1, refresh=0.5, open_quantile=0.0)
    )
    rng = np.random.default_rng(0)
    chosen = []
    for i in range(200):  # 8 s at 25 fps
        t = i / 25
        gap = 0.01 if i == 60 else 0.05 + 0.05 * rng.random()  # frame 60 (2.4 s) is closed
        crop = np.full((8, 8, 3), i % 256, np.uint8)
        sel.observe(t, crop, face(gap))
        ref = sel.reference(t)
        assert ref is not None
        if t >= 1.0:
            assert t - ref.time >= 1.0 - 1e-9  # never closer than min_age once that is possible
        chosen.append(ref.time)
    # once frame 60 is old enough it is picked, and kept while it stays in the history
    assert abs(chosen[100] - 60 / 25) < 1e-9
    assert abs(chosen[199] - 60 / 25) < 1e-9


def test_reference_targets_a_quantile_of_the_recent_openings() -> None:
    """The default picks a mouth about as open as the speaker's median (teeth showing), not
    the most closed nor the most open one, and still prefers a frontal face."""
    sel = ReferenceSelector(ReferenceConfig(min_age=1.0, history=10.0, sample_every=0.1, refresh=0.5))
    assert sel.config.open_quantile == 0.5
    gaps = np.random.default_rng(1).uniform(0.0, 0.1, 200)
    for i, g in enumerate(gaps):
        sel.observe(i / 25, np.zeros((4, 4, 3), np.uint8), face(float(g), yaw=0.3 if i == 50 else 0.0))
    ref = sel.reference(200 / 25)
    assert ref is not None
    kept = [c.gap for c in sel._cands]
    assert abs(ref.gap - float(np.median(kept))) < 0.01, (ref.gap, np.median(kept))
    assert ref.yaw < 0.1
    with pytest.raises(ValueError, match="open_quantile"):
        ReferenceConfig(open_quantile=1.5)


def test_reference_history_is_bounded_and_drops_oldest() -> None:
    sel = ReferenceSelector(ReferenceConfig(history=2.0, sample_every=0.1))
    for i in range(500):
        sel.observe(i / 25, np.zeros((4, 4, 3), np.uint8), face(0.05))
    assert len(sel._cands) <= 22
    assert sel._cands[0].time >= 500 / 25 - 2.0 - 0.1


def test_score_at_target_zero_penalises_open_mouth_and_turned_head() -> None:
    from rtdub.render.reference import Candidate, pose

    def neutrality(canonical: np.ndarray) -> float:
        return Candidate(0.0, *pose(canonical), np.zeros((1, 1, 3), np.uint8)).score(0.0)

    assert neutrality(face(0.0)) < neutrality(face(0.08))
    assert neutrality(face(0.0)) < neutrality(face(0.0, yaw=0.2))


def test_lip_units_basis_and_stats() -> None:
    rng = np.random.default_rng(0)
    lips = lip_points(face(0.02))[None] + 0.01 * rng.standard_normal((300, 40, 2))
    b = LipBasis.fit(lips, 8)
    raw = b.raw_units(lips)
    assert raw.shape == (300, 9) and b.n_units == 9
    np.testing.assert_allclose(b.components @ b.components.T, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(raw[:, -1], inner_gap_batch(lips), atol=1e-6)  # last unit = gap
    # the basis describes shape, not position: a shifted mouth has the same coefficients
    np.testing.assert_allclose(b.raw_units(lips + 0.3)[:, :-1], raw[:, :-1], atol=1e-5)
    z = UnitStats.fit(raw).normalize(raw)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
    assert abs(inner_gap(face(0.07)) - 0.07) < 1e-9


def test_silent_audio_gives_closed_mouth_units() -> None:
    bundle = load_bundle()
    st = AudioStage(bundle, get_backend("onnx", bundle), AudioDriveConfig())
    wav = np.concatenate([np.zeros(16000, np.float32), speechlike(1.0, seed=3)])
    mel = audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(wav)))
    silent = [st.units_at(mel, i / 25)[1] for i in range(50)]
    assert all(silent[2:22])  # the first second is silent
    assert not all(silent[30:])  # speech is not
    st.reset()
    u, s = st.units_at(mel, 0.5)
    assert s
    np.testing.assert_allclose(u, bundle.closed_units, atol=1e-6)
