"""aiortc plumbing: ICE configuration, host-candidate restriction, and WHIP/WHEP clients.

ICE uses host candidates only unless ICE servers are configured: no STUN server is ever
contacted by default. ``restrict_host_addresses(["127.0.0.1"])`` makes aioice gather on the
given addresses only (aioice skips 127.0.0.1 on its own), which tests and benchmarks use to
keep everything on loopback.

aiortc offers only ECDSA cipher suites in its DTLS ClientHello, so a DTLS server with an RSA
certificate (GStreamer's webrtcbin, e.g. ``simple-whip-client``) fails with "no shared cipher".
Importing this module adds two ECDHE-RSA suites to what aiortc offers (aiortc issue #1434).

aiortc's receiver hands a video frame to its decoder only when the first packet of the *next*
frame arrives, which holds every received frame one frame interval (40 ms at 25 fps).
Importing this module makes its receivers use :class:`MarkerJitterBuffer`, which also
completes a frame at its RTP marker bit.

WHIP (RFC 9725) and WHEP: POST an SDP offer as ``application/sdp`` with an optional Bearer
token; the answer comes back with 201 Created and a ``Location`` header naming the session
resource, which a DELETE ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp
import aioice.ice
import aiortc.rtcrtpreceiver
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCCertificate

from ..exceptions import RtdubError

logger = logging.getLogger(__name__)

_original_host_addresses = aioice.ice.get_host_addresses

# aiortc's own list (ECDSA only, short enough not to fragment the ClientHello), then the two
# ECDHE-RSA AEAD suites that GStreamer's DTLS server (RSA-2048 certificate) can pick.
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
)


def _accept_rsa_dtls_servers() -> None:
    original = RTCCertificate._create_ssl_context
    if getattr(original, "_rtdub_rsa", False):
        return

    def create(self: RTCCertificate, srtp_profiles: Any) -> Any:
        ctx = original(self, srtp_profiles)
        ctx.set_cipher_list(DTLS_CIPHERS)
        return ctx

    create._rtdub_rsa = True  # type: ignore[attr-defined]
    RTCCertificate._create_ssl_context = create  # type: ignore[method-assign]


_accept_rsa_dtls_servers()


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, plus: a video frame whose packets run without a gap from the
    buffer's origin to a packet with the RTP marker bit (the last packet of a frame: RFC 3550
    §5.1, RFC 7741 §4.1 for VP8, RFC 6184 §5.1 for H.264) is complete and leaves at once,
    instead of when the next frame's first packet arrives. Gaps, reordering and losses take
    aiortc's path unchanged (a frame is emitted when a later timestamp shows it ended)."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame = super()._remove_frame(sequence_number)
        if frame is not None or not self._is_video or self._origin is None:
            return frame
        packets = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None
            timestamp = packet.timestamp
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)  # type: ignore[attr-defined]
        return None


aiortc.rtcrtpreceiver.JitterBuffer = MarkerJitterBuffer  # type: ignore[misc]


def restrict_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather ICE host candidates on ``addresses`` only (None: every interface again)."""
    if addresses is None:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    fixed = list(addresses)

    def only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = only


def ice_configuration(urls: Iterable[str] = ()) -> RTCConfiguration:
    """Host candidates only unless ICE server URLs are given. Max-bundle: aiortc starts the
    second sender of a kind (an interpreter's audio track) only with every m-line bundled."""
    servers = [RTCIceServer(urls=u) for u in urls]
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class WhipError(RtdubError):
    """A WHIP/WHEP endpoint refused or failed."""


@dataclass(frozen=True)
class WhipSession:
    resource: str  # absolute URL of the session resource (DELETE ends it)
    answer: RTCSessionDescription


async def _wait_gathered(pc: RTCPeerConnection) -> None:
    # aiortc gathers all candidates inside setLocalDescription; nothing to trickle
    if pc.iceGatheringState != "complete":
        done = asyncio.Event()

        @pc.on("icegatheringstatechange")
        def _changed() -> None:
            if pc.iceGatheringState == "complete":
                done.set()

        await asyncio.wait_for(done.wait(), 10)


async def offer_to(
    url: str,
    pc: RTCPeerConnection,
    token: str | None = None,
    http: aiohttp.ClientSession | None = None,
    timeout: float = 30.0,
) -> WhipSession:
    """Create an offer on ``pc``, POST it to a WHIP or WHEP endpoint, apply the answer."""
    await pc.setLocalDescription(await pc.createOffer())
    await _wait_gathered(pc)
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    own = http is None
    client = http or aiohttp.ClientSession()
    try:
        async with client.post(
            url, data=pc.localDescription.sdp, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise WhipError(f"{url}: HTTP {resp.status} {body.strip()[:200]}")
            location = resp.headers.get("Location")
            if not location:
                raise WhipError(f"{url}: 201 without a Location header")
    except aiohttp.ClientError as exc:
        raise WhipError(f"{url}: {exc}") from exc
    finally:
        if own:
            await client.close()
    answer = RTCSessionDescription(sdp=body, type="answer")
    await pc.setRemoteDescription(answer)
    return WhipSession(urljoin(url, location), answer)


async def delete_resource(resource: str, token: str | None = None, http: aiohttp.ClientSession | None = None) -> int:
    """End a WHIP/WHEP session; returns the HTTP status (0 when unreachable)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    own = http is None
    client = http or aiohttp.ClientSession()
    try:
        async with client.delete(resource, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status
    except aiohttp.ClientError as exc:
        logger.warning("WHIP/WHEP DELETE failed", extra={"resource": resource, "error": str(exc)})
        return 0
    finally:
        if own:
            await client.close()
