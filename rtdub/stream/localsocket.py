"""Local sockets that feed a stream (``--dub-socket`` PCM, ``--events-socket`` events): a
loopback TCP address or a unix socket path, never a public interface."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections.abc import Awaitable, Callable, Iterable

from ..exceptions import InputError

Address = tuple[str, int] | str  # (host, port) on loopback, or a unix socket path
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def check_loopback(address: Address, what: str) -> None:
    """InputError unless ``address`` is a path or a loopback host (``what``: e.g. "PCM sockets")."""
    if isinstance(address, tuple) and not ipaddress.ip_address(address[0]).is_loopback:
        raise InputError(address[0], f"{what} listen on loopback addresses only")


async def listen(handler: Handler, address: Address) -> asyncio.AbstractServer:
    """A server calling ``handler`` for each client on ``address``."""
    if isinstance(address, tuple):
        return await asyncio.start_server(handler, address[0], address[1])
    return await asyncio.start_unix_server(handler, address)


def bound_address(server: asyncio.AbstractServer | None, address: Address) -> Address:
    """The listening address, with the real port when 0 was asked for."""
    if server is not None and isinstance(address, tuple):
        host, port = server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]
        return str(host), int(port)
    return address


async def close(server: asyncio.AbstractServer, clients: Iterable[asyncio.Task[None]], address: Address) -> None:
    """Stop listening, cancel the client tasks and wait for them, and remove a unix socket's file."""
    server.close()
    tasks = list(clients)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await server.wait_closed()
    if isinstance(address, str):
        with contextlib.suppress(OSError):
            os.unlink(address)
