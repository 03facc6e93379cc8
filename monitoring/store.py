"""The registry's in-memory store: series keyed (farm, cluster, node, parameter).

Each series keeps its last value and a bounded history ring. Series live in a tree
farm → cluster → node → parameter, so a query for one cluster walks that cluster only.
A series not updated for ``series_ttl_s`` leaves every view and is swept away; the number of
series is capped and refusals are counted. A value older than the stored one is ignored, so a
replayed or reordered update never moves a series backwards in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from podgrid.monitoring.history import History, Value
from podgrid.monitoring.patterns import Pattern

# farm → cluster → node → parameter → series
Tree = dict[str, dict[str, dict[str, dict[str, "Series"]]]]

SWEEP_MIN_INTERVAL_MS = 1000  # an on-demand sweep (store full) runs at most this often


def wall_ms() -> int:
    """Wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class Series:
    """One (farm, cluster, node, parameter): last value, when it was seen, and its history."""

    __slots__ = ("cluster", "farm", "history", "node", "param", "seen_ms", "time_ms", "value")

    def __init__(self, farm: str, cluster: str, node: str, param: str, history_points: int) -> None:
        self.farm = farm
        self.cluster = cluster
        self.node = node
        self.param = param
        self.time_ms = -(2**62)
        self.value: Value = 0
        self.seen_ms = 0  # receive time of the last update (drives the TTL)
        self.history = History(history_points)


@dataclass(slots=True)
class PutResult:
    """What one update did: values stored, ignored as older, refused for lack of room."""

    accepted: int = 0
    stale: int = 0
    refused: int = 0
    changed: list[tuple[str, Value]] = field(default_factory=list)


class Store:
    """All series, with TTL expiry, a series cap and the cluster-first index."""

    def __init__(
        self,
        *,
        history_points: int,
        series_ttl_s: float,
        max_series: int,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.history_points = history_points
        self.ttl_ms = int(series_ttl_s * 1000)
        self.max_series = max_series
        self.clock_ms = clock_ms
        self._tree: Tree = {}
        self._count = 0
        self._last_sweep_ms = 0
        self.refused_total = 0
        self.stale_total = 0

    def __len__(self) -> int:
        return self._count

    def put(
        self,
        farm: str,
        cluster: str,
        node: str,
        params: Sequence[tuple[str, Value]],
        time_ms: int | None = None,
    ) -> PutResult:
        """Store values of one node; ``time_ms=None`` stamps them with the receive time."""
        now_ms = self.clock_ms()
        stamp_ms = now_ms if time_ms is None else time_ms
        result = PutResult()
        node_series = self._node_table(farm, cluster, node)
        for name, value in params:
            series = node_series.get(name)
            if series is None:
                series = self._create(farm, cluster, node, name, node_series, now_ms)
                if series is None:
                    result.refused += 1
                    continue
            elif stamp_ms < series.time_ms:
                result.stale += 1
                continue
            series.time_ms = stamp_ms
            series.value = value
            series.seen_ms = now_ms
            series.history.append(stamp_ms, value)
            result.accepted += 1
            result.changed.append((name, value))
        if not node_series:
            self._prune(farm, cluster, node)
        self.refused_total += result.refused
        self.stale_total += result.stale
        return result

    def _node_table(self, farm: str, cluster: str, node: str) -> dict[str, Series]:
        clusters = self._tree.setdefault(farm, {})
        nodes = clusters.setdefault(cluster, {})
        return nodes.setdefault(node, {})

    def _create(
        self,
        farm: str,
        cluster: str,
        node: str,
        name: str,
        table: dict[str, Series],
        now_ms: int,
    ) -> Series | None:
        if self._count >= self.max_series:
            if now_ms - self._last_sweep_ms >= SWEEP_MIN_INTERVAL_MS:
                self.sweep()
            if self._count >= self.max_series:
                return None
        series = Series(farm, cluster, node, name, self.history_points)
        table[name] = series
        self._count += 1
        return series

    def _prune(self, farm: str, cluster: str, node: str) -> None:
        clusters = self._tree[farm]
        nodes = clusters[cluster]
        if not nodes.get(node, True):
            del nodes[node]
        if not nodes:
            del clusters[cluster]
        if not clusters:
            del self._tree[farm]

    def is_live(self, series: Series, now_ms: int) -> bool:
        """True while the series was updated within the TTL."""
        return now_ms - series.seen_ms <= self.ttl_ms

    def select(
        self, farm: Pattern, cluster: Pattern, node: Pattern, param: Pattern
    ) -> Iterator[Series]:
        """Live series matching the four segments, walking only the matching branches."""
        now_ms = self.clock_ms()
        for clusters in farm.select(self._tree):
            for nodes in cluster.select(clusters):
                for params in node.select(nodes):
                    for series in param.select(params):
                        if self.is_live(series, now_ms):
                            yield series

    def param_names(self, farm: Pattern, cluster: Pattern, node: Pattern) -> list[str]:
        """Distinct parameter names of the live series under the matching nodes, sorted."""
        names = {s.param for s in self.select(farm, cluster, node, Pattern.parse("*"))}
        return sorted(names)

    def sweep(self) -> int:
        """Forget every series past its TTL; returns how many were removed."""
        now_ms = self.clock_ms()
        self._last_sweep_ms = now_ms
        removed = 0
        for farm, clusters in list(self._tree.items()):
            for cluster, nodes in list(clusters.items()):
                for node, params in list(nodes.items()):
                    for name, series in list(params.items()):
                        if not self.is_live(series, now_ms):
                            del params[name]
                            removed += 1
                    if not params:
                        del nodes[node]
                if not nodes:
                    del clusters[cluster]
            if not clusters:
                del self._tree[farm]
        self._count -= removed
        return removed
