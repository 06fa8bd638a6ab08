"""Mel features against a float64 reference, streaming equality, loudness normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from rtdub import audio

from .factories import speechlike


def reference_mel(wav: np.ndarray) -> np.ndarray:
    """Straightforward float64 implementation of docs/design.md §3, written independently."""
    x = np.asarray(wav, np.float64)
    y = np.append(x[0], x[1:] - 0.97 * x[:-1])
    y = np.pad(y, (400, 400), mode="reflect")
    n = 1 + (len(y) - 800) // 200
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)
    k = np.arange(401)[:, None]
    dft = np.exp(-2j * np.pi * k * np.arange(800)[None, :] / 800)  # explicit DFT matrix
    frames = np.stack([y[i * 200 : i * 200 + 800] * win for i in range(n)])
    mag = np.abs(frames @ dft.T)

    # Slaney mel filterbank, written from the formulas
    def hz2mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        lin = f / (200 / 3)
        return np.where(f < 1000, lin, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def mel2hz(m: np.ndarray) -> np.ndarray:
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    pts = mel2hz(np.linspace(hz2mel(np.array(55.0)), hz2mel(np.array(7600.0)), 82))
    freqs = np.arange(401) * 16000 / 800
    fb = np.zeros((80, 401))
    for m in range(80):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[m] = np.maximum(0, np.minimum(up, down)) * 2 / (hi - lo)
    mel = mag @ fb.T
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_mel_matches_float64_reference() -> None:
    wav = speechlike(1.3, seed=1)
    got = audio.melspectrogram(wav)
    ref = reference_mel(wav)
    assert got.shape == ref.shape == (1 + len(wav) // 200, 80)
    assert got.dtype == np.float32
    err = np.abs(got - ref)
    assert err.max() < 2e-3, err.max()
    assert err.mean() < 1e-4
    # the features are not trivially saturated
    assert ref.std() > 0.5


def test_mel_rate_and_silence() -> None:
    assert audio.MEL_FPS == 80
    m = audio.melspectrogram(np.zeros(16000, np.float32))
    assert np.allclose(m, audio.SILENCE_MEL)


@pytest.mark.parametrize("chunk", [160, 333, 1024])
def test_streaming_mel_equals_whole_signal(chunk: int) -> None:
    wav = speechlike(1.0, seed=2)
    whole = audio.melspectrogram(wav)
    sm = audio.StreamingMel()
    for s in range(0, len(wav), chunk):
        sm.push(wav[s : s + chunk])
    n = sm.n_frames
    assert n >= len(whole) - 3  # only frames whose window reaches past the end are missing
    np.testing.assert_allclose(sm.frames(0, n), whole[:n], atol=1e-5)
    # before the stream and past what is known: silence
    assert np.all(sm.frames(-5, 0) == audio.SILENCE_MEL)
    assert np.all(sm.frames(n, n + 3) == audio.SILENCE_MEL)


def test_window_bounds_follow_lookahead() -> None:
    assert audio.window_bounds(1.0, 0.0, 16) == (64, 80)
    assert audio.window_bounds(1.0, 0.1, 16) == (72, 88)
    mel = np.arange(100, dtype=np.float32)[:, None].repeat(80, 1)
    w = audio.mel_window(mel, 1.0, 0.1, 16)
    assert w[0, 0] == 72 and w[-1, 0] == 87
    w = audio.mel_window(mel, 0.0, 0.0, 4)
    assert np.all(w == audio.SILENCE_MEL)


def test_loudness_normaliser_levels_quiet_and_loud_speech() -> None:
    wav = speechlike(6.0, seed=4)
    quiet = wav * 10 ** (-35 / 20)
    a = audio.normalize_loudness(wav)
    b = audio.normalize_loudness(quiet)

    def level(x: np.ndarray) -> float:
        tail = x[len(x) // 2 :].astype(np.float64)  # after the AGC settled
        return 10 * np.log10(np.mean(tail**2))

    assert abs(level(a) - level(b)) < 2.0
    assert abs(level(wav) - level(quiet)) > 30  # the input really differed


def test_loudness_normaliser_is_causal_and_chunkable() -> None:
    wav = speechlike(3.0, seed=5)
    whole = audio.normalize_loudness(wav)
    n = audio.LoudnessNormalizer()
    parts = [n.process(wav[s : s + 777]) for s in range(0, len(wav), 777)]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
    # changing the future does not change the past
    alt = wav.copy()
    alt[32000:] *= 5
    np.testing.assert_array_equal(audio.normalize_loudness(alt)[:32000], whole[:32000])


@pytest.mark.parametrize("n", [1, 399, 401, 799, 801, 16000, 16123])
@pytest.mark.parametrize("chunk", [37, 1024])
def test_finished_streaming_mel_equals_whole_signal_to_the_end(n: int, chunk: int) -> None:
    """finish() adds the frames over the reflected end: every frame of the whole signal, so a
    file's mel can be computed a piece at a time (rtdub.dub.FileMel)."""
    wav = (np.random.default_rng(n).standard_normal(n) * 0.1).astype(np.float32)
    whole = audio.melspectrogram(wav)
    sm = audio.StreamingMel()
    for s in range(0, n, chunk):
        sm.push(wav[s : s + chunk])
    sm.finish()
    assert sm.n_frames == len(whole)
    np.testing.assert_allclose(sm.frames(0, sm.n_frames), whole, atol=1e-4)


def test_mel_by_blocks_is_the_whole_signals() -> None:
    """melspectrogram works a block of frames at a time (its memory stays bounded): the block
    does not change the values."""
    wav = speechlike(2.1, seed=3)
    whole = audio.melspectrogram(wav, block=10**9)
    np.testing.assert_array_equal(audio.melspectrogram(wav), whole)
    np.testing.assert_allclose(audio.melspectrogram(wav, block=7), whole, atol=1e-5)
