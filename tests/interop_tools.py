"""Run the interop tests' third-party software from Debian's packages, unmodified, on loopback.

``simple-whip-client``: Debian 12's binary links libsoup2, and GStreamer's webrtcbin pulls in
libnice, which links libgupnp-igd-1.0 -> libgupnp-1.6 -> libsoup3: libsoup3 aborts the process
("libsoup2 symbols detected"). :func:`whip_client_env` builds a stand-in
``libgupnp-igd-1.0.so.4`` (libnice only asks it for UPnP port mappings; ``thread_new`` returning
NULL is libnice's "no UPnP" path) and puts it first on ``LD_LIBRARY_PATH``, so libsoup3 never
loads. The same small library, preloaded, also filters ``getifaddrs`` so that libnice gathers
on 127.0.0.1 only (libnice skips loopback interfaces unless told otherwise, and whip-client has
no option for it).

``simple-whip-server`` + ``janus``: see ``.ci/provision-simple-whip-server`` (the .deb unpacked,
its node dependencies from npm); :class:`JanusWhip` starts janus with a minimal configuration
(VideoRoom plugin, WebSocket transport and Admin API, ICE on 127.0.0.1 only) and
simple-whip-server against it, with a WHIP endpoint for one VideoRoom room.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import IO, Any

import aiohttp

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>
#include <sys/socket.h>

/* libgupnp-igd-1.0 as libnice uses it: no UPnP IGD, hence no libgupnp/libsoup3 */
unsigned long gupnp_simple_igd_get_type(void) { return 20 << 2; /* G_TYPE_OBJECT */ }
void *gupnp_simple_igd_thread_new(void) { return NULL; }
void gupnp_simple_igd_add_port(void *self, const char *protocol, unsigned external_port, const char *local_ip,
                               unsigned local_port, unsigned lease_duration, const char *description) {}
void gupnp_simple_igd_remove_port_local(void *self, const char *protocol, const char *local_ip,
                                        unsigned local_port) {}

/* interfaces as libnice sees them: IPv4 loopback only, not flagged loopback (libnice skips those) */
int getifaddrs(struct ifaddrs **out) {
  int (*real)(struct ifaddrs **) = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
  int rc = real(out);
  if (rc != 0) return rc;
  for (struct ifaddrs *i = *out; i; i = i->ifa_next) {
    if ((i->ifa_flags & IFF_LOOPBACK) && i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
      i->ifa_flags &= ~IFF_LOOPBACK;
    else
      i->ifa_flags &= ~IFF_UP;
  }
  return 0;
}
"""

IGD_SONAME = "libgupnp-igd-1.0.so.4"


class Unavailable(Exception):
    """A third-party piece is missing; the message is the precise skip reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_shim(workdir: Path) -> Path:
    """Build the stand-in ``libgupnp-igd-1.0.so.4`` (with the ``getifaddrs`` filter) in ``workdir``."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise Unavailable("no C compiler (gcc) to build the libgupnp-igd/getifaddrs shim for libnice")
    libdir = workdir / "libnice-shim"
    libdir.mkdir(parents=True, exist_ok=True)
    src, lib = libdir / "shim.c", libdir / IGD_SONAME
    src.write_text(SHIM_C)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", f"-Wl,-soname,{IGD_SONAME}", "-o", str(lib), str(src), "-ldl"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return lib


def shim_env(lib: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that loads ``lib`` instead of libgupnp-igd, preloaded (for ``getifaddrs``)."""
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib.parent), env.get("LD_LIBRARY_PATH", "")) if p)
    env["LD_PRELOAD"] = " ".join(p for p in (str(lib), env.get("LD_PRELOAD", "")) if p)
    return env


def whip_client_env(workdir: Path) -> dict[str, str]:
    """Environment that runs Debian's ``whip-client`` without libsoup3, ICE on 127.0.0.1."""
    env = shim_env(loopback_shim(workdir))
    # a private plugin registry: the user's cache may hold plugin failures from before the shim
    env["GST_REGISTRY"] = str(workdir / "gst-registry.bin")
    env["GST_DEBUG"] = "0"
    return env


# ---------------------------------------------------------------------------------------------
# janus + simple-whip-server

JANUS_LIBS = Path("/usr/lib/x86_64-linux-gnu/janus")


def simple_whip_server_dir() -> Path:
    """Where simple-whip-server's node app is: ``$RTDUB_SIMPLE_WHIP_SERVER``, or where
    ``.ci/provision-simple-whip-server`` puts it by default."""
    env = os.environ.get("RTDUB_SIMPLE_WHIP_SERVER")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rtdub" / "simple-whip-server"


def check_janus_whip() -> tuple[str, Path, Path]:
    """(node, app dir, janus libs dir) or :class:`Unavailable` with the precise reason."""
    janus = shutil.which("janus")
    if janus is None:
        raise Unavailable("not installed: janus (Debian package janus)")
    libs = JANUS_LIBS
    if not (libs / "plugins" / "libjanus_videoroom.so").exists():
        found = sorted(Path("/usr/lib").glob("*/janus/plugins/libjanus_videoroom.so"))
        if not found:
            raise Unavailable("janus is installed without its VideoRoom plugin")
        libs = found[0].parents[1]
    if not (libs / "transports" / "libjanus_websockets.so").exists():
        raise Unavailable("janus is installed without its WebSocket transport")
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise Unavailable("not installed: node (simple-whip-server runs on it)")
    app = simple_whip_server_dir()
    if not (app / "src" / "server.js").is_file() or not (app / "node_modules" / "websocket").is_dir():
        raise Unavailable(
            f"simple-whip-server is not provisioned in {app} (run .ci/provision-simple-whip-server; "
            "Debian's package cannot be apt-installed next to nodesource's nodejs)"
        )
    return node, app, libs


def _janus_config(conf: Path, libs: Path, ws_port: int, admin_port: int, rtp: tuple[int, int]) -> None:
    def others(folder: str, keep: str) -> str:
        return ",".join(sorted(p.name for p in (libs / folder).glob("*.so*") if keep not in p.name or not keep))

    (conf / "janus.jcfg").write_text(
        f"""general: {{
\tconfigs_folder = "{conf}"
\tplugins_folder = "{libs / "plugins"}"
\ttransports_folder = "{libs / "transports"}"
\tevents_folder = "{libs / "events"}"
\tloggers_folder = "{libs / "loggers"}"
\tlog_to_stdout = true
\tdebug_level = 4
\tadmin_secret = "{JanusWhip.ADMIN_SECRET}"
}}
certificates: {{
}}
media: {{
\tipv6 = false
\trtp_port_range = "{rtp[0]}-{rtp[1]}"
}}
nat: {{
\tice_tcp = false
\tice_enforce_list = "127.0.0.1"
}}
plugins: {{
\tdisable = "{others("plugins", "videoroom")}"
}}
transports: {{
\tdisable = "{others("transports", "websockets")}"
}}
loggers: {{
\tdisable = "{others("loggers", "")}"
}}
events: {{
\tbroadcast = false
\tdisable = "{others("events", "")}"
}}
"""
    )
    (conf / "janus.transport.websockets.jcfg").write_text(
        f"""general: {{
\tjson = "plain"
\tws = true
\tws_port = {ws_port}
\tws_ip = "127.0.0.1"
\twss = false
}}
admin: {{
\tadmin_ws = true
\tadmin_ws_port = {admin_port}
\tadmin_ws_ip = "127.0.0.1"
\tadmin_wss = false
}}
"""
    )
    (conf / "janus.plugin.videoroom.jcfg").write_text(
        f"""general: {{
}}
room-{JanusWhip.ROOM}: {{
\tdescription = "rtdub interop"
\tpublishers = 2
\tbitrate = 2000000
\tvideocodec = "vp8"
\taudiocodec = "opus"
}}
"""
    )


# simple-whip-server listens on every interface (it has no host setting): keep it on loopback
_LOOPBACK_JS = """
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === 'number' && (rest.length === 0 || typeof rest[0] === 'function'))
    return listen.call(this, port, '127.0.0.1', ...rest);
  return listen.call(this, port, ...rest);
};
"""


class JanusWhip:
    """janus (VideoRoom, WebSocket API + Admin API) and simple-whip-server, on loopback.

    ``async with JanusWhip(workdir) as jw``: ``jw.whip_url`` is a WHIP endpoint (Bearer
    ``jw.token``) publishing into VideoRoom room ``ROOM``; :meth:`received` reads janus' own
    counters of the media it got, through the Admin API."""

    ROOM = 1234
    ADMIN_SECRET = "rtdub-interop-admin"
    ENDPOINT = "rtdub"

    def __init__(self, workdir: Path, token: str = "interop-token") -> None:
        self.node, self.app, self.libs = check_janus_whip()
        self.shim = loopback_shim(workdir)  # libnice (janus' ICE) skips loopback interfaces otherwise
        self.workdir = workdir
        self.token = token
        self.ws_port, self.admin_port, self.http_port = free_port(), free_port(), free_port()
        base = 20000 + (self.http_port % 400) * 100
        self.rtp = (base, base + 99)
        self.janus: asyncio.subprocess.Process | None = None
        self.server: asyncio.subprocess.Process | None = None
        self.janus_log = workdir / "janus.log"
        self.server_log = workdir / "simple-whip-server.log"
        self._files: list[IO[bytes]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/whip"

    @property
    def whip_url(self) -> str:
        return f"{self.base}/endpoint/{self.ENDPOINT}"

    def logs(self) -> str:
        out = []
        for p in (self.janus_log, self.server_log):
            if p.exists():
                lines = [ln for ln in p.read_text(errors="replace").splitlines() if "AdminWSS" not in ln]
                out.append(f"--- {p.name}\n" + "\n".join(lines)[-3000:])
        return "\n".join(out)

    async def __aenter__(self) -> JanusWhip:
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        conf = self.workdir / "janus-conf"
        conf.mkdir(parents=True, exist_ok=True)
        _janus_config(conf, self.libs, self.ws_port, self.admin_port, self.rtp)
        self.janus = await asyncio.create_subprocess_exec(
            "janus", "-C", str(conf / "janus.jcfg"), "-F", str(conf), "--disable-colors",
            stdout=self._log(self.janus_log), stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            env=shim_env(self.shim),
        )  # fmt: skip
        await self._wait_port(self.ws_port, self.janus, "janus")
        app = self.workdir / "simple-whip-server"
        if app.exists():
            shutil.rmtree(app)
        app.mkdir()
        # the provisioned app's sources with this run's config.js; its node_modules, shared
        shutil.copytree(self.app / "src", app / "src", ignore=shutil.ignore_patterns("config.js"))
        (app / "node_modules").symlink_to(self.app / "node_modules")
        (app / "web").symlink_to(self.app / "web")
        config = {
            "janus": {"address": f"ws://127.0.0.1:{self.ws_port}"},
            "port": self.http_port,
            "rest": "/whip",
            "allowTrickle": True,
            "strictETags": False,
            "iceServers": [],
        }
        (app / "src" / "config.js").write_text(f"module.exports = {json.dumps(config)};\n")
        (app / "loopback.js").write_text(_LOOPBACK_JS)
        env = dict(os.environ, DEBUG="whip:*,-whip:debug,janus:*,-janus:debug,-janus:vdebug", NODE_ENV="production")
        self.server = await asyncio.create_subprocess_exec(
            self.node, "--require", str(app / "loopback.js"), "src/server.js",
            cwd=app, env=env, stdout=self._log(self.server_log), stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                if self.server.returncode is not None:
                    raise AssertionError(f"simple-whip-server exited {self.server.returncode}\n{self.logs()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.base}/healthcheck") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"simple-whip-server did not come up\n{self.logs()}")
            body = {"id": self.ENDPOINT, "room": self.ROOM, "token": self.token}
            async with http.post(f"{self.base}/create", json=body) as r:
                assert r.status == 200, await r.text()

    def _log(self, path: Path) -> IO[bytes]:
        f = path.open("wb")
        self._files.append(f)
        return f

    async def _wait_port(self, port: int, proc: asyncio.subprocess.Process, name: str) -> None:
        for _ in range(150):
            if proc.returncode is not None:
                raise AssertionError(f"{name} exited {proc.returncode}\n{self.logs()}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise AssertionError(f"{name} did not listen on {port}\n{self.logs()}")

    async def endpoints(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base}/endpoints") as r:
            data: list[dict[str, Any]] = await r.json()
            return data

    async def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        """One Janus Admin API request over its WebSocket."""
        tx = f"rtdub-{next(_tx)}"
        msg = {**request, "transaction": tx, "admin_secret": self.ADMIN_SECRET}
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{self.admin_port}", protocols=("janus-admin-protocol",)) as ws,
        ):
            await ws.send_str(json.dumps(msg))
            async for m in ws:
                data: dict[str, Any] = json.loads(m.data)
                if data.get("transaction") == tx:
                    return data
        raise AssertionError(f"no Admin API answer to {request}")

    async def handles(self) -> list[dict[str, Any]]:
        """``handle_info`` of every handle janus has."""
        out = []
        sessions = (await self.admin({"janus": "list_sessions"})).get("sessions", [])
        for s in sessions:
            for h in (await self.admin({"janus": "list_handles", "session_id": s})).get("handles", []):
                info = await self.admin({"janus": "handle_info", "session_id": s, "handle_id": h})
                if "info" in info:
                    out.append(info["info"])
        return out

    async def received(self) -> dict[str, int]:
        """Media janus received from its WebRTC publishers, from ``handle_info``'s per-medium
        ``stats.in`` (``video_packets``, ``video_bytes``, ``audio_packets``, ...)."""
        totals: dict[str, int] = {}

        def walk(node: object) -> None:
            if isinstance(node, dict):
                kind, stats = node.get("type"), node.get("stats")
                if kind in ("audio", "video") and isinstance(stats, dict) and isinstance(stats.get("in"), dict):
                    for key in ("packets", "bytes"):
                        value = stats["in"].get(key)
                        if isinstance(value, int):
                            totals[f"{kind}_{key}"] = totals.get(f"{kind}_{key}", 0) + value
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(await self.handles())
        return totals

    async def aclose(self) -> None:
        for proc in (self.server, self.janus):
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for f in self._files:
            f.close()
        self._files.clear()


_tx = itertools.count()
