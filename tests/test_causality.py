"""Causality of both stages with the committed model: output frame t never depends on video
after t or on audio after t plus the lookahead."""

from __future__ import annotations

import numpy as np
import pytest

from rtdub import audio
from rtdub.backends import get_backend
from rtdub.drive.audio import AudioDriveConfig, AudioStage
from rtdub.face.tracker import FaceTracker
from rtdub.measure import samples
from rtdub.model import ModelBundle, load_bundle
from rtdub.render.pipeline import DubPipeline, PipelineConfig

from .factories import FACE_CENTRE, speechlike

FPS = 25.0


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return load_bundle()


def mel_of(wav: np.ndarray) -> audio.StaticMel:
    return audio.StaticMel(audio.melspectrogram(audio.normalize_loudness(wav)))


@pytest.mark.parametrize("lookahead_ms", [0.0, 40.0, 100.0])
def test_audio_to_lip_is_causal_up_to_the_lookahead(bundle: ModelBundle, lookahead_ms: float) -> None:
    backend = get_backend("onnx", bundle)
    wav = speechlike(3.0, seed=1)
    k = 40  # last frame that must not change
    # audio that any frame <= k may use ends at t_k + lookahead + half an STFT window
    cut = int((k / FPS + lookahead_ms / 1000 + audio.N_FFT / 2 / audio.SAMPLE_RATE) * audio.SAMPLE_RATE) + 1
    alt = wav.copy()
    alt[cut:] = speechlike(3.0, seed=9)[cut:] * 3

    def units(w: np.ndarray) -> np.ndarray:
        st = AudioStage(bundle, backend, AudioDriveConfig(lookahead_ms=lookahead_ms))
        m = mel_of(w)
        return np.stack([st.units_at(m, i / FPS)[0] for i in range(70)])

    a, b = units(wav), units(alt)
    np.testing.assert_array_equal(a[: k + 1], b[: k + 1])
    assert np.abs(a[k + 1 :] - b[k + 1 :]).max() > 1e-3  # the future does matter once it is due


def test_generator_window_is_causal_and_used(bundle: ModelBundle) -> None:
    """Batch element i of the generator only sees its own pose, reference and units window;
    every frame of the five-frame window influences it."""
    backend = get_backend("onnx", bundle)
    rng = np.random.default_rng(0)
    s, c, u = bundle.crop_size, bundle.context, bundle.n_units
    pose = rng.random((5, 3, s, s), np.float32)
    ref = np.repeat(rng.random((1, 3, s, s), np.float32), 5, axis=0)
    units = rng.standard_normal((5, c, u)).astype(np.float32)
    out = backend.generate(pose, ref, units)
    pose2, units2 = pose.copy(), units.copy()
    pose2[4] = rng.random((3, s, s))
    units2[4] = rng.standard_normal((c, u))
    out2 = backend.generate(pose2, ref, units2)
    np.testing.assert_allclose(out[:4], out2[:4], atol=1e-5)  # other frames untouched
    assert np.abs(out[4] - out2[4]).max() > 1e-4
    for j in range(c):  # each of t-4..t matters
        u3 = units.copy()
        u3[0, j] += 3.0
        assert np.abs(backend.generate(pose[:1], ref[:1], u3[:1]) - out[:1]).max() > 1e-6, j


def test_whole_pipeline_is_causal(bundle: ModelBundle) -> None:
    """Changing the video after frame k and the audio after k + lookahead leaves every output
    frame up to k bit-identical (tracker, reference choice, both models, blend)."""
    n, k, la = 30, 17, 100.0
    img = samples.portrait()
    frames = list(samples.head_motion(img, n, FPS, centre=FACE_CENTRE))
    other = list(samples.head_motion(img, n, FPS, amplitude=3.0, seed=5, centre=FACE_CENTRE))
    wav = speechlike(n / FPS + 0.5, seed=2)
    cut = int((k / FPS + la / 1000 + 0.025) * audio.SAMPLE_RATE) + 1
    alt_wav = wav.copy()
    alt_wav[cut:] = speechlike(n / FPS + 0.5, seed=8)[cut:]
    alt_frames = frames[: k + 1] + other[k + 1 :]

    def run(fr: list[np.ndarray], w: np.ndarray) -> list[np.ndarray]:
        with FaceTracker() as tr:
            pipe = DubPipeline(bundle, get_backend("onnx", bundle), tr, PipelineConfig(lookahead_ms=la))
            m = mel_of(w)
            outs = []
            for i, f in enumerate(fr):
                x = f.copy()
                r = pipe.process(x, i / FPS, m)
                assert r.face
                outs.append(x)
        return outs

    a, b = run(frames, wav), run(alt_frames, alt_wav)
    for i in range(k + 1):
        np.testing.assert_array_equal(a[i], b[i], err_msg=f"frame {i}")
    assert any(np.any(a[i] != b[i]) for i in range(k + 1, n))
