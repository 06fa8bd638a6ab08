"""The page ``rtdub serve`` shows at ``/``: the browser sends its camera and microphone,
picks the dubbed audio (its own voice, an uploaded file, or TTS text) and plays the dubbed
stream that comes back on the same connection."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rtdub</title>
<style>
 body { font-family: sans-serif; margin: 1.5em; max-width: 60em; }
 video { width: 45%; background: #222; margin-right: 1%; }
 fieldset { margin: 1em 0; }
 #stats { font-family: monospace; white-space: pre; font-size: 0.8em; }
</style>
</head>
<body>
<h1>rtdub: live lip-sync dubbing</h1>
<fieldset>
 <legend>Dubbed audio</legend>
 <label><input type="radio" name="src" value="self" checked> my own voice</label>
 <label><input type="radio" name="src" value="upload"> a file:
   <input type="file" id="file" accept="audio/*,video/*"></label>
 <label><input type="radio" name="src" value="tts"> text to speech:
   <input id="text" size="40" value="Hello, this is a dubbed voice.">
   voice <input id="voice" size="5" value="en"></label>
</fieldset>
<label>token <input id="token" size="16" placeholder="(if the server needs one)"></label>
<button id="start">Start</button> <button id="stop" disabled>Stop</button>
<span id="status"></span>
<div><video id="local" autoplay muted playsinline></video><video id="remote" autoplay playsinline></video></div>
<div id="stats"></div>
<script>
"use strict";
let pc = null, timer = null;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get("token")) $("token").value = params.get("token");
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if ($("token").value) h["Authorization"] = "Bearer " + $("token").value;
  return h;
}
async function dubSpec() {
  const src = document.querySelector("input[name=src]:checked").value;
  if (src === "tts") return {source: "tts", text: $("text").value, voice: $("voice").value};
  if (src === "upload") {
    const f = $("file").files[0];
    if (!f) throw new Error("choose a file first");
    const r = await fetch("/uploads", {method: "POST", body: f, headers: headers()});
    if (!r.ok) throw new Error("upload: " + (await r.text()));
    return {source: "upload", id: (await r.json()).id};
  }
  return {source: "self"};
}
async function start() {
  $("start").disabled = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true});
    $("local").srcObject = media;
    pc = new RTCPeerConnection({iceServers: []});
    media.getTracks().forEach((t) => pc.addTrack(t, media));
    const remote = new MediaStream();
    $("remote").srcObject = remote;
    pc.ontrack = (ev) => remote.addTrack(ev.track);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((ok) => {
      if (pc.iceGatheringState === "complete") return ok();
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") ok(); };
    });
    const body = {sdp: pc.localDescription.sdp, type: "offer", dub: await dubSpec()};
    const r = await fetch("/offer", {method: "POST", body: JSON.stringify(body),
                                     headers: headers({"Content-Type": "application/json"})});
    if (!r.ok) throw new Error(await r.text());
    await pc.setRemoteDescription(await r.json());
    $("status").textContent = "connected";
    $("stop").disabled = false;
    timer = setInterval(showStats, 1000);
  } catch (e) {
    $("status").textContent = "error: " + e.message;
    $("start").disabled = false;
  }
}
async function showStats() {
  const r = await fetch("/stats", {headers: headers()});
  if (r.ok) $("stats").textContent = JSON.stringify(await r.json(), null, 1);
}
function stop() {
  if (timer) clearInterval(timer);
  if (pc) pc.close();
  pc = null;
  $("start").disabled = false; $("stop").disabled = true; $("status").textContent = "stopped";
}
$("start").onclick = start;
$("stop").onclick = stop;
// window.rtdubStats: what the browser decoded (read by tests through the DevTools protocol)
window.rtdubStats = {state: "idle"};
async function probe() {
  if (!pc) return;
  const s = {state: pc.connectionState, framesDecoded: 0, width: 0, height: 0, mean: null};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      s.framesDecoded = r.framesDecoded || 0; s.width = r.frameWidth || 0; s.height = r.frameHeight || 0;
    }
  });
  const v = $("remote");
  if (v.videoWidth) {
    const c = document.createElement("canvas");
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    let sum = 0;
    for (let i = 0; i < px.length; i += 4) sum += px[i] + px[i + 1] + px[i + 2];
    s.mean = sum / (3 * px.length / 4);
  }
  window.rtdubStats = s;
}
setInterval(probe, 500);
if (params.get("autostart")) start();
</script>
</body>
</html>
"""
