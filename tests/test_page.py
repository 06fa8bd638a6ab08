"""The page ``rtdub serve`` shows at ``/``, in headless Chromium with a fake camera, driven
through the DevTools protocol (aiohttp's WebSocket client):

- a live session: the figures the page shows (frame rate, added latency, faces, degraded
  frames, A/V offset, the server's session count) agree with ``GET /stats`` read at about the
  same time; the latency plot is drawn, the dubbed audio plays and mutes, the camera list is
  filled; a screenshot goes to the test's tmp dir (and to ``$RTDUB_PAGE_SHOT`` when set);
- failures are shown in words: a missing token, too many sessions, no file to upload, no
  camera permission (the browser's refusal simulated), a server that is gone.

Skips when Chromium is not installed (``.ci/run`` installs it when it can).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rtdub.stream.server import DubServer, ServeConfig

from .interop_tools import free_port
from .streamkit import make_pipeline
from .test_interop import _stop, vga_frames, write_y4m

pytestmark = pytest.mark.slow


def _chromium() -> str:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if chrome is None:
        pytest.skip("not installed: chromium")
    return chrome


@pytest.fixture(autouse=True)
def _loopback(loopback_only: None) -> None:
    """ICE on 127.0.0.1 only (fixture in tests/streamkit.py)."""


class DevTools:
    """One DevTools protocol session with a page target; events are ignored."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self._ids)
        await self.ws.send_json({"id": i, "method": method, "params": params})
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") == i:
                if "error" in data:
                    raise AssertionError(f"{method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result
        raise AssertionError("the DevTools connection closed")

    async def eval(self, expression: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float) -> Any:
        """Poll ``expression`` until it is truthy; its last value (falsy on timeout)."""
        value = None
        for _ in range(int(timeout / 0.25)):
            with contextlib.suppress(AssertionError):  # the page may be navigating
                value = await self.eval(expression)
            if value:
                break
            await asyncio.sleep(0.25)
        return value

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && !!$('start')", 10)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def chromium_page(tmp_path: Path, url: str) -> AsyncIterator[DevTools]:
    """Headless Chromium showing ``url``, a fake camera playing the astronaut clip."""
    chrome = _chromium()
    clip = tmp_path / "camera.y4m"
    if not clip.exists():
        write_y4m(clip, vga_frames(50))
    port = free_port()
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}", f"--remote-debugging-port={port}",
        f"--user-data-dir={tmp_path / 'profile'}", "--webrtc-ip-handling-policy=default",
        "--window-size=1280,1180", "--hide-scrollbars", url,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        chrome, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as http:
            pages: list[dict[str, Any]] = []
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/json") as r:
                        pages = [t for t in await r.json() if t.get("type") == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
            assert pages, "no DevTools page target"
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        await _stop(proc)


READ_PAGE = """(() => {
  const text = (sel) => document.querySelector(sel).textContent.trim();
  const fig = (id) => ({value: text("#" + id + " .value"), sub: text("#" + id + " .sub")});
  const c = $("plot"), g = c.getContext("2d");
  const px = g.getImageData(0, 0, c.width, c.height).data;
  let blue = 0;  // pixels of the median line (#2563eb)
  for (let i = 0; i < px.length; i += 4)
    if (Math.abs(px[i] - 37) < 40 && Math.abs(px[i + 1] - 99) < 40 && px[i + 2] > 200 && px[i + 3] > 200) blue++;
  const r = $("remote");
  return {fps: fig("fig-fps"), latency: fig("fig-latency"), faces: fig("fig-faces"),
          degraded: fig("fig-degraded"), av: fig("fig-av"), sessions: text("#server-sessions"),
          status: text("#status"), error: $("error").classList.contains("shown"),
          dub: text("#dub-label"), plotSamples: samples.length, plotBlue: blue,
          muted: r.muted, paused: r.paused, mute: text("#mute"),
          cameras: [...document.querySelectorAll("#camera option")].map((o) => [o.value, o.text]),
          decoded: window.rtdubStats, drawn: window.rtdubShown.session};
})()"""


def _number(text: str) -> float:
    m = re.search(r"[-+]?\d+(?:\.\d+)?", text.replace("\u2212", "-"))
    assert m, text
    return float(m.group())


async def _stats(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/stats") as r:
        data: dict[str, Any] = await r.json()
        return data


@pytest.mark.flaky(reruns=2)  # the "still current" checks race a live session on wall-clock time
async def test_page_figures_match_stats(server: DubServer, tmp_path: Path) -> None:
    _chromium()
    base = f"http://127.0.0.1:{server.port}"
    async with chromium_page(tmp_path, f"{base}/?autostart=1") as page, aiohttp.ClientSession() as http:
        ready = await page.wait_for(
            "window.rtdubShown && rtdubShown.session.output_frames >= 50 && samples.length >= 4"
            " && window.rtdubStats.framesDecoded >= 25 && rtdubStats.audioSamples > 0",
            45,
        )
        shown_json = await page.eval("JSON.stringify([window.rtdubShown, window.rtdubStats])")
        assert ready, f"the page's figures did not fill: {shown_json} {await _stats(http, base)}"
        await asyncio.sleep(2)  # a little more of the plot
        # the page polls /stats once a second: make it poll now, read what it shows, and read
        # /stats right after, a few milliseconds later
        seen = await page.eval(f"pollStats().then(() => {READ_PAGE})")
        stats = await _stats(http, base)
        shot = await page.screenshot(tmp_path / "page.png")
        if os.environ.get("RTDUB_PAGE_SHOT"):
            shutil.copyfile(shot, os.environ["RTDUB_PAGE_SHOT"])
        print("screenshot:", shot)
        print("page:", json.dumps(seen))
        print("/stats:", json.dumps(stats))

        assert not seen["error"] and seen["status"] == "live", seen
        (s,) = stats["sessions"]
        assert seen["sessions"] == "server: 1 session"
        d = seen["drawn"]  # the /stats entry the page drew from: each figure shows its field
        assert d["name"] == s["name"]
        fps, sent = _number(seen["fps"]["value"]), _number(seen["fps"]["sub"])
        assert seen["fps"]["value"].endswith("fps") and abs(fps - d["output_fps"]) <= 0.051, seen["fps"]
        assert sent == d["output_frames"], seen["fps"]
        latency, latency_max = _number(seen["latency"]["value"]), _number(seen["latency"]["sub"])
        assert seen["latency"]["value"].endswith("ms"), seen["latency"]
        assert abs(latency - d["video_delay_ms"]["p50"]) <= 0.5 and abs(latency_max - d["video_delay_ms"]["max"]) <= 0.5
        dsc = d["scheduler"]
        assert _number(seen["faces"]["value"]) == round(100 * dsc["faces"] / dsc["frames"]), seen["faces"]
        assert seen["faces"]["sub"] == f"in {dsc['faces']} of {dsc['frames']} frames", seen["faces"]
        assert _number(seen["degraded"]["value"]) == dsc["frames"] - dsc["modes"]["full"], seen["degraded"]
        assert f"{d['late_frames']} late" in seen["degraded"]["sub"], seen["degraded"]
        assert abs(_number(seen["av"]["value"]) - d["av_offset_ms"]) <= 0.5, seen["av"]
        # ... and what it shows is current: /stats read just after agrees
        sc = s["scheduler"]
        assert abs(fps - s["output_fps"]) <= max(1.0, 0.05 * s["output_fps"]), (seen["fps"], s["output_fps"])
        assert s["output_frames"] - 5 <= sent <= s["output_frames"], (seen["fps"], s["output_frames"])
        p50 = s["video_delay_ms"]["p50"]
        assert abs(latency - p50) <= max(30.0, 0.5 * p50), (seen["latency"], s["video_delay_ms"])
        assert abs(_number(seen["faces"]["value"]) - 100 * sc["faces"] / sc["frames"]) <= 2, (seen["faces"], sc)
        assert sc["faces"] > 0  # the astronaut is found
        degraded, now_degraded = _number(seen["degraded"]["value"]), sc["frames"] - sc["modes"]["full"]
        assert now_degraded - 5 <= degraded <= now_degraded, (seen["degraded"], sc)
        assert abs(_number(seen["av"]["value"]) - s["av_offset_ms"]) <= 60, (seen["av"], s["av_offset_ms"])
        assert seen["dub"] == "audio: your own voice" and s["dub_source"] == "self"
        # the plot: one sample a second, the median line drawn
        assert seen["plotSamples"] >= 4 and seen["plotBlue"] > 50, seen
        # the dubbed stream plays in the page, with its sound
        decoded = seen["decoded"]
        assert decoded["framesDecoded"] >= 25 and decoded["audioSamples"] > 0, decoded
        assert (decoded["width"], decoded["height"]) == (640, 480)
        assert seen["muted"] is False and seen["paused"] is False and seen["mute"] == "Mute", seen
        # the camera list is filled once the camera is open, the active one chosen
        assert seen["cameras"] and all(value for value, _ in seen["cameras"]), seen["cameras"]

        toggle = "$('mute').click(); [$('remote').muted, $('mute').textContent]"
        muted = await page.eval(toggle)
        assert muted == [True, "Sound off · unmute"]
        unmuted = await page.eval(toggle)
        assert unmuted == [False, "Mute"]

        # Stop ends the session on the server too
        await page.eval("$('stop').click()")
        gone = await page.wait_for("$('server-sessions').textContent === 'server: 0 sessions'", 20)
        assert gone, await _stats(http, base)
        assert await page.eval("$('status').textContent") == "stopped"
        assert not server.peers


ERROR = "[$('error').classList.contains('shown'), $('error-title').textContent]"


async def _error_after(page: DevTools, action: str) -> str:
    await page.eval("$('error').classList.remove('shown')")
    await page.eval(action)
    shown = await page.wait_for(f"(() => {{ const e = {ERROR}; return e[0] && e[1]; }})()", 20)
    return str(shown or "")


async def test_page_says_what_went_wrong(tmp_path: Path) -> None:
    _chromium()
    # a server that wants a token and takes no session: nothing reaches the engine
    server = DubServer(ServeConfig(port=0, token="s3cret", max_sessions=0), make_pipeline)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with chromium_page(tmp_path, f"{base}/") as page:
            await page.navigate(f"{base}/")
            assert await page.wait_for("$('server-sessions').textContent === 'server: needs a token'", 5)
            start = "$('start').click()"
            assert await _error_after(page, start) == "The server needs an access token."
            assert await page.eval("$('status').textContent") == "error"
            assert await page.eval("$('start').disabled") is False

            await page.navigate(f"{base}/?token=s3cret")
            assert await _error_after(page, start) == "Too many sessions."
            assert (await page.eval("$('server-sessions').textContent")) == "server: 0 sessions"

            await page.eval("document.querySelector('input[value=upload]').click()")
            assert await _error_after(page, start) == "Choose a file first."
            await page.eval("document.querySelector('input[value=self]').click()")

            # what Chromium throws when the person refuses the camera (its fake UI always allows,
            # and overrides Browser.setPermission)
            await page.eval(
                "navigator.mediaDevices.getUserMedia = () =>"
                " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'))"
            )
            assert await _error_after(page, start) == "No permission to use the camera."
            # an ICE failure is not provoked here: its words only
            assert await page.eval("explain(named('ConnectionFailed'))[0]") == "The connection failed."

            await page.navigate(f"{base}/?token=s3cret")
            await server.aclose()
            assert await _error_after(page, start) == "Could not reach the server."
            text = await page.eval("$('error-text').textContent")
            assert "rtdub serve" in text and base in text, text
            await page.screenshot(tmp_path / "error.png")
    finally:
        await server.aclose()
