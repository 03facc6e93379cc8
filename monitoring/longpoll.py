"""Long-poll waiters, grouped by query: a wake renders each group's answer once.

Waiters asking the same query (the same path and format: every idle agent asks the same
thing) share one group; an update is matched against groups, not waiters. A woken group's
answer is rendered and encoded once, then written straight to every waiter's transport in
one tight loop (:mod:`podgrid.monitoring.answer`), before any waiter's handler runs again:
the last agent hears of a new server after N socket writes, not after N handler runs.
Groups whose cluster segment names literal clusters are indexed by cluster, so an update only
looks at the groups that could care about it (plus the few with cluster globs).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from podgrid.errors import PodGridError
from podgrid.monitoring.answer import Rendered
from podgrid.monitoring.history import Value
from podgrid.monitoring.query import Query

PRUNE_MIN_INTERVAL_S = 1.0  # at the cap, look for waiters whose client left at most this often

Render = Callable[[Query], Rendered]
# (format, answers sent, seconds to render, seconds from the update to the last write)
Observe = Callable[[str, int, float, float], None]


class TooManyWaiters(PodGridError, RuntimeError):
    """The hub already holds ``max_waiters`` long-polls."""


class Outcome(enum.Enum):
    """How a long-poll ended."""

    TIMEOUT = "timeout"  # nothing matched in time: answer the current state
    WOKEN = "woken"  # a matching update: answer it (the handler renders)
    SENT = "sent"  # a matching update, and the answer is already on the wire


class _Transport(Protocol):
    """What the hub needs of an asyncio transport (aiohttp's ``request.transport``)."""

    def is_closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


class _Waiter:
    __slots__ = ("future", "tail", "transport")

    def __init__(
        self, future: asyncio.Future[Outcome], transport: _Transport | None, tail: bytes
    ) -> None:
        self.future = future
        self.transport = transport
        self.tail = tail  # this waiter's own header line(s) and the blank line


class _Group:
    __slots__ = ("key", "query", "waiters")

    def __init__(self, key: Hashable, query: Query) -> None:
        self.key = key
        self.query = query
        self.waiters: dict[_Waiter, None] = {}  # insertion order: first parked, first written


def _expire(future: asyncio.Future[Outcome]) -> None:
    if not future.done():
        future.set_result(Outcome.TIMEOUT)


class LongPollHub:
    """Parks queries until a matching update arrives or their wait ends."""

    def __init__(
        self,
        max_waiters: int,
        render: Render | None = None,
        observe: Observe | None = None,
    ) -> None:
        self.max_waiters = max_waiters
        self._render = render
        self._observe = observe
        self._groups: dict[Hashable, _Group] = {}
        self._by_cluster: dict[str, set[_Group]] = {}
        self._wild: set[_Group] = set()
        self._count = 0
        self._closed = False
        self._last_prune = 0.0
        self.refused_total = 0
        self.sent_total = 0

    @property
    def waiting(self) -> int:
        """How many long-polls are parked right now."""
        return self._count

    @property
    def groups(self) -> int:
        """How many distinct queries the parked long-polls ask."""
        return len(self._groups)

    async def wait(
        self,
        query: Query,
        timeout_s: float,
        *,
        key: Hashable | None = None,
        transport: _Transport | None = None,
        tail: bytes = b"",
    ) -> Outcome:
        """Hold until a matching update or until ``timeout_s`` passes.

        ``key`` names the query (waiters with equal keys get the same answer bytes; default:
        the query itself). With a ``transport`` the hub writes the answer itself on a wake
        (``head + tail + body``) and returns :attr:`Outcome.SENT`.
        """
        if self._closed:
            return Outcome.TIMEOUT
        if self._count >= self.max_waiters:
            self._prune()
            if self._count >= self.max_waiters:
                self.refused_total += 1
                raise TooManyWaiters(f"{self._count} long-polls already waiting")
        group_key = query if key is None else key
        group = self._groups.get(group_key)
        if group is None:
            group = self._add_group(group_key, query)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), transport, tail)
        group.waiters[waiter] = None
        self._count += 1
        timer = loop.call_later(timeout_s, _expire, waiter.future)
        try:
            return await waiter.future
        finally:
            timer.cancel()
            if waiter in group.waiters:  # not woken: leave the group (a wake empties it)
                del group.waiters[waiter]
                self._count -= 1
                if not group.waiters:
                    self._drop_group(group)

    def _add_group(self, key: Hashable, query: Query) -> _Group:
        group = _Group(key, query)
        self._groups[key] = group
        for bucket in self._buckets(query):
            bucket.add(group)
        return group

    def _buckets(self, query: Query) -> list[set[_Group]]:
        if query.cluster.match_all or query.cluster.glob is not None:
            return [self._wild]
        return [self._by_cluster.setdefault(c, set()) for c in query.cluster.literals]

    def _drop_group(self, group: _Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
        query = group.query
        if query.cluster.match_all or query.cluster.glob is not None:
            self._wild.discard(group)
            return
        for cluster in query.cluster.literals:
            bucket = self._by_cluster.get(cluster)
            if bucket is not None:
                bucket.discard(group)
                if not bucket:
                    del self._by_cluster[cluster]

    def _prune(self) -> None:
        """Forget waiters whose client hung up (aiohttp does not cancel their handlers)."""
        now = time.monotonic()
        if now - self._last_prune < PRUNE_MIN_INTERVAL_S:
            return
        self._last_prune = now
        for group in list(self._groups.values()):
            gone = [w for w in group.waiters if w.transport and w.transport.is_closing()]
            for waiter in gone:
                del group.waiters[waiter]
                self._count -= 1
                _expire(waiter.future)
            if not group.waiters:
                self._drop_group(group)

    def release_all(self) -> None:
        """Answer every parked long-poll now and park no more (graceful shutdown)."""
        self._closed = True
        for group in list(self._groups.values()):
            self._drop_group(group)
            waiters, group.waiters = group.waiters, {}
            self._count -= len(waiters)
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_result(Outcome.WOKEN)

    def notify(
        self, farm: str, cluster: str, node: str, values: Sequence[tuple[str, Value]]
    ) -> int:
        """Wake every group that one of these fresh values matches; returns waiters woken."""
        woken = 0
        started = time.perf_counter()
        for bucket in (self._by_cluster.get(cluster), self._wild):
            if not bucket:
                continue
            hit = [
                g
                for g in bucket
                if any(g.query.matches(farm, cluster, node, p, v) for p, v in values)
            ]
            for group in hit:
                woken += self._wake(group, started)
        return woken

    def _wake(self, group: _Group, update_at: float) -> int:
        self._drop_group(group)
        waiters, group.waiters = group.waiters, {}
        self._count -= len(waiters)
        if self._render is None:
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_result(Outcome.WOKEN)
            return len(waiters)
        started = time.perf_counter()
        rendered = self._render(group.query)
        head, body = rendered.head(), rendered.body
        render_s = time.perf_counter() - started
        sent = 0
        for waiter in waiters:
            future = waiter.future
            if future.done():  # its wait ended in this very loop turn: it answers itself
                continue
            transport = waiter.transport
            if transport is None or transport.is_closing():
                future.set_result(Outcome.WOKEN)
                continue
            transport.write(head + waiter.tail + body)
            future.set_result(Outcome.SENT)
            sent += 1
        self.sent_total += sent
        if self._observe is not None and sent:
            self._observe(group.query.fmt, sent, render_s, time.perf_counter() - update_at)
        return len(waiters)
