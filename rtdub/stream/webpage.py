"""The page ``rtdub serve`` shows at ``/``: the browser sends its camera and microphone,
picks the dubbed audio (its own voice, an uploaded file, or TTS text) and plays the dubbed
stream that comes back on the same connection.

Plain HTML, CSS and JavaScript, no build step. What it shows of its own session comes from
``GET /stats`` (the entry whose ``name`` is the ``session`` the ``/offer`` answer gave):

- frame rate: ``output_fps``;
- added latency: ``video_delay_ms.p50`` (``max`` beside it), plotted over the last 60 s;
- faces: ``scheduler.faces`` of ``scheduler.frames``;
- degraded frames: ``scheduler.frames`` less ``scheduler.modes.full`` (cheaper modes and
  pass-through), with ``late_frames`` and the ``dropped_frames`` beside it;
- A/V offset: ``av_offset_ms`` (positive: the video leaves later than its audio).

Each figure's element has an id (``fig-fps``, ``fig-latency``, ``fig-faces``,
``fig-degraded``, ``fig-av``, ``server-sessions``) so that tests read what a person sees;
``window.rtdubStats`` holds what the browser decoded.
"""

from __future__ import annotations

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rtdub · live dubbing</title>
<style>
 :root { --bg: #f4f5f7; --card: #fff; --ink: #1b2230; --muted: #677084; --line: #e2e5ea;
         --accent: #2563eb; --ok: #15803d; --warn: #b45309; --bad: #c81e1e; }
 * { box-sizing: border-box; }
 body { margin: 0; background: var(--bg); color: var(--ink);
        font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
 main { max-width: 1140px; margin: 0 auto; padding: 18px 24px 32px; }
 header { display: flex; align-items: center; justify-content: space-between; gap: 16px; margin-bottom: 14px; }
 h1 { font-size: 21px; margin: 0; letter-spacing: -0.01em; }
 h1 span { font-weight: 400; color: var(--muted); font-size: 15px; margin-left: 8px; }
 .state { display: flex; align-items: center; gap: 14px; font-size: 13px; color: var(--muted); }
 #status { display: inline-flex; align-items: center; gap: 7px; padding: 4px 11px; border-radius: 999px;
           background: #e8ebf0; color: var(--ink); font-weight: 600; }
 #status::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: #98a1b2; }
 #status.connecting::before { background: var(--warn); }
 #status.live { background: #dcf3e4; } #status.live::before { background: var(--ok); }
 #status.error { background: #fbe3e3; } #status.error::before { background: var(--bad); }
 .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; }
 .controls { padding: 12px 16px; display: grid; gap: 10px; margin-bottom: 14px; }
 .row { display: flex; align-items: center; gap: 10px 18px; }
 .row > b { font-size: 13px; color: var(--muted); font-weight: 600; width: 8em; flex: none; white-space: nowrap; }
 .detail { display: inline-flex; align-items: center; gap: 10px; padding-left: 16px;
           border-left: 1px solid var(--line); }
 #src-self { color: var(--muted); font-size: 13px; }
 [hidden] { display: none !important; }
 .row label { white-space: nowrap; }
 .buttons { display: flex; gap: 8px; flex: none; }
 label { display: inline-flex; align-items: center; gap: 6px; }
 select, input[type=text], input[type=password] { font: inherit; padding: 5px 8px; border: 1px solid #cfd4dc;
           border-radius: 6px; background: #fff; color: var(--ink); }
 select { width: 24em; max-width: 100%; text-overflow: ellipsis; }
 #text { width: 20em; } #voice { width: 3.5em; } #token { width: 11em; }
 input[type=file] { font-size: 13px; max-width: 15em; }
 .spacer { flex: 1; }
 button { font: inherit; font-weight: 600; padding: 6px 16px; border-radius: 7px; border: 1px solid #cfd4dc;
          background: #fff; color: var(--ink); cursor: pointer; }
 button:disabled { opacity: 0.45; cursor: default; }
 #start { background: var(--accent); border-color: var(--accent); color: #fff; }
 #error { display: none; margin-bottom: 14px; padding: 10px 14px; border-radius: 8px; background: #fdecec;
          border: 1px solid #f3b8b8; color: #7f1313; }
 #error.shown { display: block; } #error b { display: block; margin-bottom: 2px; }
 .panes { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; margin-bottom: 14px; }
 .pane { position: relative; aspect-ratio: 4 / 3; background: #14171d; border-radius: 10px; overflow: hidden; }
 .pane video { width: 100%; height: 100%; object-fit: contain; display: block; }
 .tag { position: absolute; top: 10px; left: 10px; padding: 3px 10px; border-radius: 6px;
        background: rgba(10, 12, 16, 0.68); color: #fff; font-size: 13px; font-weight: 600; }
 .tag small { font-weight: 400; opacity: 0.8; margin-left: 4px; }
 .empty { position: absolute; inset: 0; display: grid; place-items: center; color: #8b94a5; font-size: 14px;
          text-align: center; padding: 2em; }
 .has-video .empty { display: none; }
 #mute { position: absolute; right: 10px; bottom: 10px; background: rgba(10, 12, 16, 0.68); color: #fff;
         border-color: transparent; padding: 5px 12px; font-size: 13px; }
 #mute.off { background: var(--bad); }
 .figures { display: grid; grid-template-columns: repeat(5, 1fr); gap: 14px; margin-bottom: 14px; }
 .fig { padding: 10px 14px; }
 .fig .name { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase;
              letter-spacing: 0.04em; }
 .fig .value { font-size: 28px; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.2; }
 .fig .unit { font-size: 15px; font-weight: 500; color: var(--muted); margin-left: 3px; }
 .fig .sub { font-size: 12px; color: var(--muted); min-height: 1.45em; }
 .fig.warn .value { color: var(--warn); }
 .plot { padding: 10px 14px 8px; margin-bottom: 14px; }
 .plot .head { display: flex; justify-content: space-between; font-size: 13px; color: var(--muted); }
 .plot .head b { color: var(--ink); }
 .key { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin: 0 4px 0 12px; }
 #plot { width: 100%; height: 150px; display: block; }
 details { font-size: 13px; color: var(--muted); }
 #stats { font: 12px/1.35 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre; overflow: auto;
          max-height: 24em; color: var(--ink); }
 @media (max-width: 1100px) { .row { flex-wrap: wrap; } }
 @media (max-width: 800px) { .panes { grid-template-columns: 1fr; }
                             .figures { grid-template-columns: repeat(2, 1fr); } }
</style>
</head>
<body>
<main>
<header>
 <h1>rtdub<span>live lip-sync dubbing</span></h1>
 <div class="state"><span id="server-sessions" title="sessions the server runs now, all clients">server: …</span>
  <span id="status">idle</span></div>
</header>

<section class="card controls">
 <div class="row">
  <b>Camera</b>
  <select id="camera" title="switches the live stream too"><option value="">default camera</option></select>
  <label id="model-choice" hidden title="the server's --models-dir: an enrolled person's model">model
   <select id="model"><option value="">server default</option></select></label>
  <label title="only when the server was started with --token">access token
   <input id="token" type="password" autocomplete="off" placeholder="if the server asks"></label>
  <span class="spacer"></span>
  <span class="buttons"><button id="start">Start</button><button id="stop" disabled>Stop</button></span>
 </div>
 <div class="row">
  <b>Dubbed audio</b>
  <label><input type="radio" name="src" value="self" checked> my own voice</label>
  <label><input type="radio" name="src" value="upload"> a file</label>
  <label><input type="radio" name="src" value="tts"> text to speech</label>
  <span id="src-upload" class="detail" hidden><input type="file" id="file" accept="audio/*,video/*"></span>
  <span id="src-tts" class="detail" hidden>
   <input id="text" type="text" maxlength="2000" value="Hello, this is a dubbed voice.">
   <label>voice <input id="voice" type="text" value="en"></label></span>
  <span id="src-self" class="detail">the microphone's speech is the dubbed audio</span>
 </div>
</section>

<div id="error" role="alert"><b id="error-title"></b><span id="error-text"></span></div>

<section class="panes">
 <div class="pane" id="local-pane"><video id="local" autoplay muted playsinline></video>
  <div class="empty">Your camera shows here once you press Start.</div>
  <span class="tag">Camera <small>what you send</small></span></div>
 <div class="pane" id="remote-pane"><video id="remote" autoplay playsinline></video>
  <div class="empty">The dubbed stream comes back here.</div>
  <span class="tag">Dubbed <small id="dub-label">what comes back</small></span>
  <button id="mute" disabled title="the dubbed audio plays with the dubbed video">Mute</button></div>
</section>

<section class="figures">
 <div class="card fig" id="fig-fps"><div class="name">Frame rate</div>
  <div class="value">–</div><div class="sub">dubbed frames per second</div></div>
 <div class="card fig" id="fig-latency"><div class="name">Added latency</div>
  <div class="value">–</div><div class="sub">median time in the engine</div></div>
 <div class="card fig" id="fig-faces"><div class="name">Faces</div>
  <div class="value">–</div><div class="sub">frames with a face</div></div>
 <div class="card fig" id="fig-degraded"><div class="name">Degraded frames</div>
  <div class="value">–</div><div class="sub">rendered cheaper to keep up</div></div>
 <div class="card fig" id="fig-av"><div class="name">A/V offset</div>
  <div class="value">–</div><div class="sub">video against dubbed audio</div></div>
</section>

<section class="card plot">
 <div class="head"><span><b>Added latency</b>, last 60 s
  <span class="key" style="background:#2563eb"></span>median
  <span class="key" style="background:#f0a35e"></span>max</span>
  <span id="plot-now"></span></div>
 <canvas id="plot"></canvas>
</section>

<details><summary>Raw <code>/stats</code></summary><div id="stats"></div></details>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let pc = null, media = null, sessionId = null, statsFailures = 0, running = false;
const samples = [];  // {t: seconds, p50, max} of this page's session, the last 60 s
const PLOT_S = 60;
if (params.get("token")) $("token").value = params.get("token");

// --- words for what went wrong --------------------------------------------------------------
class ServerRefused extends Error {
  constructor(status, text, what) { super(text); this.status = status; this.what = what; }
}
function explain(e) {
  const name = e && e.name, msg = (e && e.message ? e.message : String(e)).trim();
  if (e instanceof ServerRefused) {
    if (e.status === 401) return ["The server needs an access token.",
      "It was started with --token: type that token in the access token field (or open the page " +
      "with ?token=...) and press Start."];
    if (e.status === 503) return ["Too many sessions.",
      "The server already runs as many dubbing sessions as it allows. Try again when one ends."];
    if (e.status === 413) return ["The file is too large.", "The server does not accept files this big: " + msg];
    if (e.status === 415) return ["The server cannot use that file.", msg];
    if (e.status === 408) return ["The " + e.what + " took too long.", "The server stopped waiting for it: " + msg];
    return ["The server refused the " + e.what + ".", "It answered " + e.status + ": " + (msg || "no reason given")];
  }
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError")
    return ["No permission to use the camera.",
      "The browser did not let this page use the camera and microphone. Allow them in the site " +
      "settings (the icon left of the address) and press Start again."];
  if (name === "NotFoundError" || name === "OverconstrainedError")
    return ["No camera found.",
      "The browser found no camera (or microphone) to use. Connect one, or pick another camera, " +
      "and press Start again."];
  if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError")
    return ["The camera could not be opened.", "Another program may be using it. Close it and press Start again."];
  if (name === "NoMediaDevices")
    return ["This page cannot use a camera here.",
      "Browsers give cameras only to pages served over HTTPS or from localhost. Open it as " +
      "http://localhost:" + (location.port || 80) + "/ or serve it behind HTTPS."];
  if (name === "TypeError" && /fetch|network/i.test(msg))
    return ["Could not reach the server.", "No answer from " + location.origin + ". Is rtdub serve still running?"];
  if (name === "ConnectionFailed")
    return ["The connection failed.",
      "The browser and the server could not exchange media (ICE failed). From another machine the " +
      "server may need --ice-server, or an address both sides reach."];
  if (name === "NoFile") return ["Choose a file first.", msg];
  if (name === "SessionEnded")
    return ["The session ended.", "The server closed this session. Press Start for a new one."];
  return ["Something went wrong.", msg];
}
function showError(e) {
  const [title, text] = explain(e);
  $("error-title").textContent = title;
  $("error-text").textContent = text;
  $("error").classList.add("shown");
  setStatus("error", "error");
}
function clearError() { $("error").classList.remove("shown"); }
function named(name, message) { const e = new Error(message || name); e.name = name; return e; }
function setStatus(kind, text) { const s = $("status"); s.className = kind; s.textContent = text; }

// --- requests -------------------------------------------------------------------------------
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if ($("token").value) h["Authorization"] = "Bearer " + $("token").value;
  return h;
}
async function refusal(r, what) { return new ServerRefused(r.status, (await r.text()).trim(), what); }
async function dubSpec() {
  const src = document.querySelector("input[name=src]:checked").value;
  if (src === "tts") return {source: "tts", text: $("text").value, voice: $("voice").value};
  if (src === "upload") {
    const f = $("file").files[0];
    if (!f) throw named("NoFile", "Choose a file for the dubbed audio first, or pick another source.");
    const r = await fetch("/uploads", {method: "POST", body: f, headers: headers()});
    if (!r.ok) throw await refusal(r, "upload");
    return {source: "upload", id: (await r.json()).id};
  }
  return {source: "self"};
}

// --- models (the server's --models-dir, by name) -------------------------------------------
async function listModels() {
  const r = await fetch("/models", {headers: headers()});
  if (!r.ok) return;
  const models = (await r.json()).models || [];
  const sel = $("model"), keep = sel.value;
  sel.replaceChildren(new Option("server default", ""));
  models.forEach((m) => sel.add(new Option(m.name + (m.enrolled ? " (enrolled)" : ""), m.name)));
  if (models.some((m) => m.name === keep)) sel.value = keep;
  $("model-choice").hidden = !models.length;
}

// --- cameras --------------------------------------------------------------------------------
async function listCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const sel = $("camera"), keep = sel.value;
  const cams = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  const active = media && media.getVideoTracks()[0] ? media.getVideoTracks()[0].getSettings().deviceId : "";
  sel.replaceChildren();
  if (!cams.length) sel.add(new Option("no camera found", ""));
  cams.forEach((d, i) => sel.add(new Option(d.label || "camera " + (i + 1), d.deviceId)));
  const want = keep || active;
  if (want && cams.some((d) => d.deviceId === want)) sel.value = want;
}
function videoConstraints() {
  const v = {width: 640, height: 480};
  if ($("camera").value) v.deviceId = {exact: $("camera").value};
  return v;
}
async function openCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw named("NoMediaDevices");
  const src = document.querySelector("input[name=src]:checked").value;
  try {
    return await navigator.mediaDevices.getUserMedia({video: videoConstraints(), audio: true});
  } catch (e) {
    // no microphone: the dubbed audio does not need one unless it is the speaker's own voice
    if (src !== "self" && e.name === "NotFoundError")
      return await navigator.mediaDevices.getUserMedia({video: videoConstraints()});
    throw e;
  }
}
async function switchCamera() {
  if (!pc || !media) return;
  try {
    const fresh = await navigator.mediaDevices.getUserMedia({video: videoConstraints()});
    const track = fresh.getVideoTracks()[0];
    const sender = pc.getSenders().find((s) => s.track && s.track.kind === "video");
    if (sender) await sender.replaceTrack(track);
    media.getVideoTracks().forEach((t) => { media.removeTrack(t); t.stop(); });
    media.addTrack(track);
  } catch (e) { showError(e); }
}

// --- session --------------------------------------------------------------------------------
function lock(on) {  // the dubbed audio and the token are fixed for a session; the camera is not
  document.querySelectorAll("input[name=src], #file, #text, #voice, #token").forEach((e) => { e.disabled = on; });
}
async function start() {
  clearError();
  $("start").disabled = true;
  lock(true);
  setStatus("connecting", "connecting");
  try {
    media = await openCamera();
    $("local").srcObject = media;
    $("local-pane").classList.add("has-video");
    listCameras();
    pc = new RTCPeerConnection({iceServers: []});
    media.getTracks().forEach((t) => pc.addTrack(t, media));
    const remote = new MediaStream();
    $("remote").srcObject = remote;
    pc.ontrack = (ev) => { remote.addTrack(ev.track); playRemote(); };
    pc.onconnectionstatechange = onConnectionState;
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((ok) => {
      if (pc.iceGatheringState === "complete") return ok();
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") ok(); };
    });
    const body = {sdp: pc.localDescription.sdp, type: "offer", dub: await dubSpec()};
    if ($("model").value) body.model = $("model").value;
    const r = await fetch("/offer", {method: "POST", body: JSON.stringify(body),
                                     headers: headers({"Content-Type": "application/json"})});
    if (!r.ok) throw await refusal(r, "session");
    const answer = await r.json();
    sessionId = answer.session || null;
    await pc.setRemoteDescription({type: answer.type, sdp: answer.sdp});
    samples.length = 0;
    running = true;
    setStatus("connecting", "connecting media");
    $("stop").disabled = false;
    $("mute").disabled = false;
    pollStats();
  } catch (e) {
    teardown();
    showError(e);
  }
}
function onConnectionState() {
  if (!pc) return;
  const s = pc.connectionState;
  if (s === "connected") { setStatus("live", "live"); $("remote-pane").classList.add("has-video"); }
  else if (s === "disconnected") setStatus("connecting", "connection interrupted");
  else if (s === "failed") { teardown(); showError(named("ConnectionFailed")); }
}
function playRemote() {
  const v = $("remote");
  v.play().catch(() => {  // autoplay with sound refused: play muted, say so on the button
    v.muted = true; showMute(); v.play().catch(() => {});
  });
}
function showMute() {
  const m = $("remote").muted;
  $("mute").textContent = m ? "Sound off · unmute" : "Mute";
  $("mute").classList.toggle("off", m);
}
function teardown() {
  running = false;
  if (pc) pc.close();
  pc = null;
  if (media) media.getTracks().forEach((t) => t.stop());
  media = null;
  $("local").srcObject = null;
  $("remote").srcObject = null;
  $("local-pane").classList.remove("has-video");
  $("remote-pane").classList.remove("has-video");
  $("start").disabled = false; $("stop").disabled = true; $("mute").disabled = true;
  lock(false);
}
function stop() { teardown(); sessionId = null; clearError(); setStatus("", "stopped"); }

// --- figures --------------------------------------------------------------------------------
function fig(id, value, unit, sub, warn) {
  const el = $(id);
  const v = el.querySelector(".value");
  v.textContent = value;
  if (unit) { const u = document.createElement("span"); u.className = "unit"; u.textContent = unit; v.append(u); }
  if (sub !== undefined) el.querySelector(".sub").textContent = sub;
  el.classList.toggle("warn", !!warn);
}
const SOURCES = {self: "your own voice", tts: "text to speech", upload: "your file", silence: "silence"};
function showSession(s) {
  const sc = s.scheduler || {}, frames = sc.frames || 0, modes = sc.modes || {};
  const fps = s.output_fps || 0;
  fig("fig-fps", fps.toFixed(1), "fps", s.output_frames + " frames sent", running && frames > 25 && fps < 15);
  const lat = s.video_delay_ms || {p50: 0, max: 0};
  fig("fig-latency", Math.round(lat.p50), "ms", "median · max " + Math.round(lat.max) + " ms");
  const faces = sc.faces || 0;
  fig("fig-faces", frames ? Math.round(100 * faces / frames) : "–", frames ? "%" : "",
      "in " + faces + " of " + frames + " frames");
  const degraded = Math.max(0, frames - (modes.full || 0));
  const d = s.dropped_frames || {};
  const dropped = (d.stale || 0) + (d.unsent || 0) + (d.ring_overflow || 0) + (d.out_of_order || 0);
  fig("fig-degraded", degraded, "", (frames ? Math.round(100 * degraded / frames) : 0) + "% · " +
      (s.late_frames || 0) + " late · " + dropped + " dropped", frames && degraded / frames > 0.2);
  const av = s.av_offset_ms || 0;
  fig("fig-av", (av > 0 ? "+" : "") + Math.round(av), "ms",
      Math.abs(av) <= 20 ? "in step (within 20 ms)" : av > 0 ? "video later than audio" : "audio later than video",
      Math.abs(av) > 45);
  $("dub-label").textContent = "audio: " + (SOURCES[s.dub_source] || s.dub_source || "?");
}
async function pollStats() {
  let data;
  try {
    const r = await fetch("/stats", {headers: headers()});
    if (r.status === 401) { $("server-sessions").textContent = "server: needs a token"; return; }
    if (!r.ok) throw await refusal(r, "stats request");
    data = await r.json();
    statsFailures = 0;
  } catch (e) {
    if (++statsFailures === 3 && running) showError(named("TypeError", "fetch failed"));
    $("server-sessions").textContent = "server: no answer";
    return;
  }
  const n = data.sessions.length;
  $("server-sessions").textContent = "server: " + n + (n === 1 ? " session" : " sessions");
  $("stats").textContent = JSON.stringify(data, null, 1);
  if (!running || !sessionId) return;
  const s = data.sessions.find((x) => x.name === sessionId);
  if (!s) { if (pc && pc.connectionState === "connected") { teardown(); showError(named("SessionEnded")); } return; }
  showSession(s);
  const now = performance.now() / 1000;
  if (s.output_frames > 0) samples.push({t: now, p50: s.video_delay_ms.p50, max: s.video_delay_ms.max});
  while (samples.length && samples[0].t < now - PLOT_S) samples.shift();
  drawPlot();
  window.rtdubShown = {session: s, sessions: n, at: Date.now()};
}

// --- latency plot ---------------------------------------------------------------------------
function niceStep(span) {
  const raw = span / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
}
function drawPlot() {
  const c = $("plot"), dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 54, right = 10, top = 8, bottom = 20, pw = w - left - right, ph = h - top - bottom;
  const peak = Math.max(50, ...samples.map((p) => p.max));
  const step = niceStep(peak * 1.1), ymax = Math.ceil(peak * 1.1 / step) * step;
  const now = performance.now() / 1000;
  const x = (t) => left + pw * (1 - (now - t) / PLOT_S), y = (v) => top + ph * (1 - v / ymax);
  g.font = "11px system-ui, sans-serif"; g.fillStyle = "#677084"; g.strokeStyle = "#e8eaee"; g.lineWidth = 1;
  g.textAlign = "right"; g.textBaseline = "middle";
  for (let v = 0; v <= ymax + 1e-9; v += step) {
    g.beginPath(); g.moveTo(left, Math.round(y(v)) + 0.5); g.lineTo(w - right, Math.round(y(v)) + 0.5); g.stroke();
    g.fillText(v + " ms", left - 6, y(v));
  }
  g.textAlign = "center"; g.textBaseline = "top";
  [60, 45, 30, 15, 0].forEach((ago) =>
    g.fillText(ago ? "−" + ago + " s" : "now", Math.min(x(now - ago), w - right - 12), h - bottom + 5));
  const line = (key, color, width) => {
    if (!samples.length) return;
    g.strokeStyle = color; g.lineWidth = width; g.lineJoin = "round"; g.beginPath();
    samples.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p[key])) : g.moveTo(x(p.t), y(p[key]))));
    g.stroke();
  };
  line("max", "#f0a35e", 1.5);
  line("p50", "#2563eb", 2.5);
  if (!samples.length) {
    g.textAlign = "center"; g.textBaseline = "middle"; g.fillStyle = "#98a1b2"; g.font = "13px system-ui, sans-serif";
    g.fillText("drawn while a session runs", left + pw / 2, top + ph / 2);
  }
  const last = samples[samples.length - 1];
  $("plot-now").textContent =
    last ? "now: " + Math.round(last.p50) + " ms median, " + Math.round(last.max) + " ms max" : "";
}

$("start").onclick = start;
$("stop").onclick = stop;
$("mute").onclick = () => {
  const v = $("remote");
  v.muted = !v.muted;
  if (!v.muted) v.play().catch(() => {});
  showMute();
};
$("camera").onchange = switchCamera;
function showSource() {
  const src = document.querySelector("input[name=src]:checked").value;
  ["self", "upload", "tts"].forEach((k) => { $("src-" + k).hidden = k !== src; });
}
document.querySelectorAll("input[name=src]").forEach((r) => { r.onchange = showSource; });
showSource();
if (navigator.mediaDevices) {
  navigator.mediaDevices.addEventListener("devicechange", listCameras);
  listCameras().catch(() => {});
}
listModels().catch(() => {});
$("token").addEventListener("change", () => listModels().catch(() => {}));
window.addEventListener("resize", drawPlot);
setInterval(pollStats, 1000);
pollStats();
drawPlot();

// window.rtdubStats: what the browser decoded (read by tests through the DevTools protocol)
window.rtdubStats = {state: "idle"};
async function probe() {
  if (!pc) return;
  const s = {state: pc.connectionState, framesDecoded: 0, width: 0, height: 0, mean: null, audioSamples: 0};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      s.framesDecoded = r.framesDecoded || 0; s.width = r.frameWidth || 0; s.height = r.frameHeight || 0;
    }
    if (r.type === "inbound-rtp" && r.kind === "audio") s.audioSamples = r.totalSamplesReceived || 0;
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
