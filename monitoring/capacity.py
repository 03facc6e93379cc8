"""How many connections and long-polls one registry holds, and what happens past that.

At start the registry raises its soft ``RLIMIT_NOFILE`` to the hard limit and logs what it
got. Its connection budget (``fd_budget``) stays :data:`FD_RESERVE` below that limit; its
waiter cap (``max_waiters``) stays :data:`QUERY_RESERVE` below the budget, so plain queries
and ``/healthz`` always find a connection. Past the budget, :class:`GatedSite` still accepts
(the reserve has the file descriptors) but hands the connection to :class:`Overloaded`, which
answers ``/healthz`` itself and everything else ``503`` with ``Retry-After``, then closes:
``accept()`` never runs out of descriptors, and a monitor still sees the registry alive.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

FD_RESERVE = 256  # descriptors kept out of the budget: over-budget answers, files, sockets
QUERY_RESERVE_SHARE = 0.05  # of the budget, never parked: plain queries and /healthz
MIN_QUERY_RESERVE = 16
LISTEN_BACKLOG = 4096  # a burst of agents reconnecting at once waits in the kernel
OVERLOAD_READ_TIMEOUT_S = 2.0  # an over-budget client that sends no request line is closed


@dataclass(frozen=True, slots=True)
class FdLimit:
    """The process's descriptor limit before and after :func:`raise_fd_limit`."""

    soft_before: int
    soft: int
    hard: int


def raise_fd_limit() -> FdLimit:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one (as far as the kernel lets us)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    return FdLimit(soft, max(soft, target), hard)


@dataclass(frozen=True, slots=True)
class Capacity:
    """The budgets one registry runs with, and where each number came from."""

    fd_budget: int  # connections held at once
    max_waiters: int  # long-polls parked at once
    fd_limit: int  # the soft descriptor limit the budgets derive from

    @classmethod
    def derive(cls, limit: int, fd_budget: int | None, max_waiters: int | None) -> Capacity:
        """Configured values, clamped below the limit; unset ones derived from it."""
        budget = max(1, limit - FD_RESERVE)
        if fd_budget is not None:
            budget = min(fd_budget, budget)
        reserve = max(MIN_QUERY_RESERVE, int(budget * QUERY_RESERVE_SHARE))
        waiters = max(1, budget - reserve)
        if max_waiters is not None:
            waiters = min(max_waiters, waiters)
        return cls(budget, waiters, limit)


@dataclass(slots=True)
class Listening:
    """The registry's listening site, once started (filled in by ``run_registry``)."""

    site: GatedSite | None = None

    def connections(self) -> int:
        """Connections held now (0 before the site starts)."""
        return 0 if self.site is None else self.site.open_connections()

    def over_budget(self) -> int:
        """Connections answered by :class:`Overloaded` so far."""
        return 0 if self.site is None else self.site.refused_total


def _first_line(data: bytes) -> tuple[str, str]:
    method, _, rest = data.partition(b" ")
    path = rest.partition(b" ")[0].partition(b"?")[0]
    return method.decode("latin-1"), path.decode("latin-1")


class Overloaded(asyncio.Protocol):
    """One over-budget connection: ``/healthz`` answered, anything else 503; then closed."""

    def __init__(self, health: Callable[[], dict[str, Any]], retry_after_s: int) -> None:
        self._health = health
        self._retry_after_s = retry_after_s
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(OVERLOAD_READ_TIMEOUT_S, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" not in self._buffer or self._transport is None:
            if len(self._buffer) > 8192 and self._transport is not None:
                self._transport.close()
            return
        method, path = _first_line(self._buffer)
        if method in ("GET", "HEAD") and path == "/healthz":
            body = json.dumps({**self._health(), "status": "overloaded"}).encode()
            status, extra = "200 OK", ""
        else:
            body = json.dumps(
                {
                    "error": "overloaded",
                    "message": "the registry holds its whole connection budget; retry later",
                    "fields": [],
                }
            ).encode()
            status, extra = "503 Service Unavailable", f"Retry-After: {self._retry_after_s}\r\n"
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        ).encode("ascii")
        self._transport.write(head if method == "HEAD" else head + body)
        self._transport.close()


class GatedSite(web.TCPSite):
    """A TCP site that hands connections past ``fd_budget`` to :class:`Overloaded`."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        fd_budget: int,
        health: Callable[[], dict[str, Any]],
        retry_after_s: int,
        reuse_port: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            runner, host, port, backlog=LISTEN_BACKLOG, reuse_port=reuse_port or None, **kwargs
        )
        self.fd_budget = fd_budget
        self.refused_total = 0
        self._health = health
        self._retry_after_s = retry_after_s

    def open_connections(self) -> int:
        """Connections the HTTP server holds now."""
        server = self._runner.server
        return 0 if server is None else _held(server)

    async def start(self) -> None:
        """Listen like ``TCPSite``, through the budget gate."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if _held(server) >= self.fd_budget:
                self.refused_total += 1
                return Overloaded(self._health, self._retry_after_s)
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            family=socket.AF_UNSPEC,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port


def _held(server: web.Server) -> int:
    # ``Server.connections`` copies its table into a list: too dear on every accept at 10k.
    table = getattr(server, "_connections", None)
    return len(table) if isinstance(table, dict) else len(server.connections)
