"""``--events-socket``: timed phoneme or viseme events over a local socket, next to the dubbed
audio of ``--dub-socket``. Newline-delimited JSON, one message a line, in the wire format of
rtdub/stream/eventfeed.py (the same parse, size limit and rate limit as the data channel).

``address`` is ``("127.0.0.1", port)`` for TCP (loopback hosts only; port 0 picks one) or a
filesystem path for a unix socket. One client at a time: a second connection while one is
served is closed at once and counted (``refused_clients``). A client that disconnects leaves
the stream running (the frames past its last event take the audio drive) and the next one
continues the same timeline (send ``{"reset": true}`` to start a new utterance). A line longer
than the message limit is skipped up to its newline and counted once as oversize.
"""

from __future__ import annotations

import asyncio
import logging

from .eventfeed import EventFeed
from .localsocket import bound_address, check_loopback, close, listen

logger = logging.getLogger(__name__)

READ_SIZE = 4096


class EventSocket:
    """Serves one :class:`EventFeed`. Lifecycle: ``await start()``, ``await aclose()``."""

    def __init__(self, address: tuple[str, int] | str, feed: EventFeed) -> None:
        check_loopback(address, "event sockets")
        self.address = address
        self.feed = feed
        self.clients = 0  # served
        self.refused_clients = 0  # connected while another was served
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = False

    @property
    def bound(self) -> tuple[str, int] | str:
        """The listening address (with the real port when 0 was asked for)."""
        return bound_address(self._server, self.address)

    async def start(self) -> None:
        self._server = await listen(self._client, self.address)
        logger.info("events socket on %s", self.bound, extra={"address": str(self.bound)})

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._busy:
                self.refused_clients += 1
                logger.warning(
                    "events socket: a second client refused (%d so far)", self.refused_clients,
                    extra={"refused_clients": self.refused_clients},
                )  # fmt: skip
                return
            self._busy = True
            self.clients += 1
            try:
                await self._serve(reader)
            finally:
                self._busy = False
                logger.info(
                    "events socket: client %d gone after %d messages", self.clients, self.feed.counts.messages,
                    extra={"clients": self.clients, "messages": self.feed.counts.messages},
                )  # fmt: skip
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        limit = self.feed.config.max_message_bytes
        line = bytearray()
        skipping = False  # inside a line already counted as oversize
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                *done, rest = data.split(b"\n")
                for part in done:
                    if skipping:
                        skipping = False
                        line.clear()
                        continue
                    line += part
                    self._line(bytes(line))
                    line.clear()
                if skipping:
                    continue
                line += rest
                if len(line) > limit:  # counted now; the rest of it is skipped
                    self.feed.feed(bytes(line[: limit + 1]))
                    line.clear()
                    skipping = True
            if line and not skipping:
                self._line(bytes(line))
        except ConnectionError:
            return

    def _line(self, data: bytes) -> None:
        data = data.strip()
        if data:
            self.feed.feed(data)

    async def aclose(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await close(server, self._tasks, self.address)


__all__ = ["EventSocket"]
