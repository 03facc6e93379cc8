"""Simulated job agents for the registry scale benchmark: one cheap coroutine per agent.

Each agent holds one keep-alive HTTP/1.1 connection to its registry (agent i → registry
i mod K, the spread a real agent list gives) and long-polls the agents' own query,
``*/PoD_Masters/*/NeededWorkers/1:?wait=…&since=…``, exactly as ``jobagent/poller.py`` asks it.
The client is a bare asyncio protocol rather than aiohttp, so that a few processes can hold
tens of thousands of agents without their own CPU hiding the registry's: the requests and
answers on the wire are real HTTP. An agent process is driven by its parent over a pipe:
``connect``, ``park`` (every agent sends its long-poll), ``collect`` (report who heard of
which server when), ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from multiprocessing.connection import Connection
from urllib.parse import urlsplit

from podgrid.protocol import MASTERS_CLUSTER, MasterParam

QUERY = f"/rest/*/{MASTERS_CLUSTER}/*/{MasterParam.NEEDED_WORKERS}/1:"
CONNECT_BATCH = 256  # connections opened at once: keep within the listen backlog
WAIT_S = 60


class _Agent(asyncio.Protocol):
    """One agent's connection: sends a request, collects one answer at a time."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future[tuple[int, bytes, float]] | None = None
        self.closing = False
        self.first_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            if self.closing:
                self.answer.cancel()
            else:
                self.answer.set_exception(ConnectionError("registry closed the connection"))

    def data_received(self, data: bytes) -> None:
        # Stamp the first bytes of an answer; parse only once it is complete (cheap per call,
        # so that thousands of answers arriving at once are stamped when they arrive).
        if not self.buffer:
            self.first_at = time.monotonic()
        self.buffer += data
        if self.answer is None or self.answer.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        start = self.buffer.find(b"Content-Length:", 0, end)
        if start < 0:
            start = self.buffer.lower().find(b"content-length:", 0, end)
        stop = self.buffer.find(b"\r\n", start)
        length = int(self.buffer[start + 15 : stop]) if start >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.answer.set_result((status, body, self.first_at))

    def get(self, path: str) -> asyncio.Future[tuple[int, bytes, float]]:
        """Send ``GET path``; the future gets (status, body, monotonic time of the answer)."""
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: application/json\r\n\r\n".encode()
        )
        return self.answer


class AgentSwarm:
    """``count`` agents of one process, spread over the registries' URLs."""

    def __init__(self, urls: list[str], first: int, count: int) -> None:
        self.urls = urls
        self.first = first
        self.count = count
        self.agents: list[_Agent] = []
        self.polls: list[asyncio.Future[tuple[int, bytes, float]]] = []

    async def connect(self) -> None:
        """Open every agent's connection, a batch at a time."""
        loop = asyncio.get_running_loop()
        for start in range(0, self.count, CONNECT_BATCH):
            batch = []
            for i in range(start, min(start + CONNECT_BATCH, self.count)):
                url = urlsplit(self.urls[(self.first + i) % len(self.urls)])
                host, port = url.hostname or "127.0.0.1", url.port or 80
                agent = _Agent(f"{host}:{port}")
                batch.append(loop.create_connection(lambda a=agent: a, host, port))  # type: ignore[misc]
                self.agents.append(agent)
            await asyncio.gather(*batch)

    def park(self) -> None:
        """Every agent sends its long-poll (since now: only a newer server wakes it)."""
        since = int(time.time() * 1000)
        self.polls = [a.get(f"{QUERY}?wait={WAIT_S}&since={since}") for a in self.agents]

    async def collect(self, server: str, timeout_s: float) -> tuple[list[float], int, int]:
        """(answer times of the agents that heard of ``server``, agents that did not, 503s)."""
        done, _ = await asyncio.wait(self.polls, timeout=timeout_s) if self.polls else (set(), 0)
        times: list[float] = []
        lost = refused = 0
        needle = f'"node":"{server}"'.encode()
        for poll in self.polls:
            if poll not in done or poll.cancelled() or poll.exception() is not None:
                lost += 1
                continue
            status, body, at = poll.result()
            if status == 503:
                refused += 1
            elif needle in body:
                times.append(at)
            else:
                lost += 1
        return times, lost, refused

    def close(self) -> None:
        """Close every connection."""
        for agent in self.agents:
            agent.closing = True
            if agent.transport is not None:
                agent.transport.close()


def swarm_main(conn: Connection, urls: list[str], first: int, count: int) -> None:
    """A process of ``count`` agents, driven over ``conn`` (see the module docstring)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        swarm = AgentSwarm(urls, first, count)
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            if command == "connect":
                await swarm.connect()
                conn.send("connected")
            elif command == "park":
                swarm.park()
                conn.send("parked")
            elif command == "collect":
                server, timeout_s = arg
                conn.send(await swarm.collect(server, timeout_s))
            elif command == "close":
                swarm.close()
                conn.send("closed")
                return

    asyncio.run(main())
