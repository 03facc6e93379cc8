"""Long-poll waiters: queries parked on futures, woken by the store's matching updates.

Waiters whose cluster segment names literal clusters are indexed by cluster, so an update
only looks at the waiters that could care about it (plus the few with cluster globs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from podgrid.errors import PodGridError
from podgrid.monitoring.history import Value
from podgrid.monitoring.query import Query


class TooManyWaiters(PodGridError, RuntimeError):
    """The hub already holds ``max_waiters`` long-polls."""


class _Waiter:
    __slots__ = ("future", "query")

    def __init__(self, query: Query, future: asyncio.Future[None]) -> None:
        self.query = query
        self.future = future


class LongPollHub:
    """Parks queries until a matching update arrives or their wait ends."""

    def __init__(self, max_waiters: int) -> None:
        self.max_waiters = max_waiters
        self._by_cluster: dict[str, set[_Waiter]] = {}
        self._wild: set[_Waiter] = set()
        self._count = 0
        self._closed = False

    @property
    def waiting(self) -> int:
        """How many long-polls are parked right now."""
        return self._count

    async def wait(self, query: Query, timeout_s: float) -> bool:
        """Hold until a matching update (True) or until ``timeout_s`` passes (False)."""
        if self._closed:
            return False
        if self._count >= self.max_waiters:
            raise TooManyWaiters(f"{self._count} long-polls already waiting")
        waiter = _Waiter(query, asyncio.get_running_loop().create_future())
        buckets = self._buckets(query)
        for bucket in buckets:
            bucket.add(waiter)
        self._count += 1
        try:
            await asyncio.wait_for(waiter.future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._count -= 1
            for bucket in buckets:
                bucket.discard(waiter)
            self._drop_empty(query)

    def _buckets(self, query: Query) -> list[set[_Waiter]]:
        if query.cluster.match_all or query.cluster.glob is not None:
            return [self._wild]
        return [self._by_cluster.setdefault(c, set()) for c in query.cluster.literals]

    def _drop_empty(self, query: Query) -> None:
        for cluster in query.cluster.literals:
            if not self._by_cluster.get(cluster, True):
                del self._by_cluster[cluster]

    def release_all(self) -> None:
        """Answer every parked long-poll now and park no more (graceful shutdown)."""
        self._closed = True
        for bucket in (*self._by_cluster.values(), self._wild):
            for waiter in bucket:
                if not waiter.future.done():
                    waiter.future.set_result(None)

    def notify(
        self, farm: str, cluster: str, node: str, values: Sequence[tuple[str, Value]]
    ) -> int:
        """Wake every waiter that one of these fresh values matches; returns how many."""
        woken = 0
        for bucket in (self._by_cluster.get(cluster), self._wild):
            if not bucket:
                continue
            for waiter in bucket:
                if waiter.future.done():
                    continue
                query = waiter.query
                if any(query.matches(farm, cluster, node, p, v) for p, v in values):
                    waiter.future.set_result(None)
                    woken += 1
        return woken
