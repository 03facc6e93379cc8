"""A loopback TCP proxy in front of a real MariaDB that can lose the answer to a COMMIT.

It relays bytes both ways and reads the client's side as MySQL protocol packets (3-byte
length, sequence number, payload). Armed with :meth:`MySQLProxy.lose_next_commit`, it passes
the next ``COM_QUERY "COMMIT"`` on to the server, waits for the server's answer, and then
closes both connections instead of relaying it: the transaction is committed, and the
client only sees a lost connection. That is the ambiguous commit a real network can produce.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

COM_QUERY = 0x03
HEADER_BYTES = 4


@dataclass
class MySQLProxy:
    """Listening on ``port`` (127.0.0.1); relays to ``upstream``."""

    upstream: tuple[str, int]
    port: int = 0
    commits_to_lose: int = 0
    commits_lost: int = 0
    commits_seen: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def lose_next_commit(self) -> None:
        """Commit the next COMMIT on the server but drop its answer and the connection."""
        self.commits_to_lose += 1

    async def _pump_to_server(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        losing: asyncio.Event,
    ) -> None:
        while True:
            header = await reader.readexactly(HEADER_BYTES)
            length = int.from_bytes(header[:3], "little")
            payload = await reader.readexactly(length)
            is_commit = (
                length > 1
                and payload[0] == COM_QUERY
                and payload[1:].strip().rstrip(b";").upper() == b"COMMIT"
            )
            if is_commit:
                self.commits_seen += 1
                if self.commits_to_lose > 0:
                    self.commits_to_lose -= 1
                    losing.set()  # the next answer from the server is this COMMIT's
            writer.write(header + payload)
            await writer.drain()

    async def _pump_to_client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        losing: asyncio.Event,
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if losing.is_set():
                self.commits_lost += 1
                return  # committed on the server; the client never hears of it
            writer.write(data)
            await writer.drain()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        losing = asyncio.Event()
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump_to_server(c_reader, s_writer, losing)),
            asyncio.create_task(self._pump_to_client(s_reader, c_writer, losing)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for task in pumps:
                with contextlib.suppress(asyncio.CancelledError, OSError, EOFError):
                    await task
            for w in (c_writer, s_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    def _spawn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._handle(r, w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MySQLProxy]:
        """Serve until the block ends; then close every relayed connection."""
        self._server = await asyncio.start_server(self._spawn, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._server.wait_closed()
