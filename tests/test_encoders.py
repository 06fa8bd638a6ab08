"""The engine's realtime VP8 encoder: decodable output, keyframes on request, installation."""

from __future__ import annotations

import fractions

import aiortc.rtcrtpsender
import av
import numpy as np
from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from rtdub.stream import encoders
from rtdub.stream.encoders import RealtimeVp8Encoder

from .streamkit import portrait_frames


def _frames(n: int) -> list[av.VideoFrame]:
    out = []
    for i, img in enumerate(portrait_frames()[:n]):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = i * 3600, fractions.Fraction(1, 90000)
        out.append(f)
    return out


def _is_keyframe(payloads: list[bytes]) -> bool:
    data = b"".join(vp8_depayload(p) for p in payloads)
    return not data[0] & 1  # VP8 frame tag: bit 0 is 0 for a key frame (RFC 6386 §9.1)


def test_encodes_decodable_frames_and_keyframes_on_request() -> None:
    enc = RealtimeVp8Encoder()
    dec = Vp8Decoder()
    frames = _frames(6)
    keys, psnrs = [], []
    for i, f in enumerate(frames):
        payloads, ts = enc.encode(f, force_keyframe=(i == 4))
        assert payloads and ts == i * 3600
        keys.append(_is_keyframe(payloads))
        out = dec.decode(JitterFrame(b"".join(vp8_depayload(p) for p in payloads), ts))
        assert len(out) == 1
        a = out[0].to_ndarray(format="rgb24").astype(np.float64)
        b = f.to_ndarray(format="rgb24").astype(np.float64)
        psnrs.append(10 * np.log10(255**2 / np.mean((a - b) ** 2)))
    assert keys == [True, False, False, False, True, False]
    assert min(psnrs) > 25, psnrs
    # a resolution change reopens the encoder with a key frame
    small = av.VideoFrame.from_ndarray(np.zeros((120, 160, 3), np.uint8), format="rgb24")
    small.pts, small.time_base = 6 * 3600, fractions.Fraction(1, 90000)
    payloads, _ = enc.encode(small)
    assert _is_keyframe(payloads) and enc.codec.width == 160


def test_install_swaps_vp8_only_and_uninstall_restores() -> None:
    was_installed = encoders._original_get_encoder is not None  # e.g. by an in-process CLI test
    encoders.uninstall()
    original = aiortc.rtcrtpsender.get_encoder
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    encoders.install()
    try:
        assert isinstance(aiortc.rtcrtpsender.get_encoder(vp8), RealtimeVp8Encoder)
        assert not isinstance(aiortc.rtcrtpsender.get_encoder(opus), RealtimeVp8Encoder)
        encoders.install()  # idempotent: still wraps aiortc's own
        assert isinstance(aiortc.rtcrtpsender.get_encoder(vp8), RealtimeVp8Encoder)
    finally:
        encoders.uninstall()
    assert aiortc.rtcrtpsender.get_encoder is original
    if was_installed:
        encoders.install()
