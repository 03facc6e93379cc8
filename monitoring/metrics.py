"""Prometheus metrics of one registry app, on the app's own CollectorRegistry.

Counters are bumped where things happen; the series count, the long-poll waiters and the
per-PoD-server worker gauges are read from the store at scrape time by a custom collector,
so their cost is paid only when scraped and the server label set stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from podgrid.monitoring.patterns import MATCH_ALL, Pattern
from podgrid.monitoring.store import Store
from podgrid.protocol.registry import MASTERS_CLUSTER, MasterParam

_SERVER_PARAMS = Pattern.parse(f"{MasterParam.NEEDED_WORKERS}|{MasterParam.WORKERS}")
WAKE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
QUERY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 60.0)


class RegistryMetrics:
    """Every metric the registry exports, created once per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.datagrams_received = Counter(
            "podgrid_registry_datagrams_received_total",
            "ApMon UDP datagrams received (accepted or not).",
            registry=r,
        )
        self.datagrams_dropped = Counter(
            "podgrid_registry_datagrams_dropped_total",
            "ApMon UDP datagrams dropped, by reason.",
            ["reason"],
            registry=r,
        )
        self.publishes_received = Counter(
            "podgrid_registry_publishes_received_total",
            "HTTP publish requests received (accepted or not).",
            registry=r,
        )
        self.publishes_rejected = Counter(
            "podgrid_registry_publishes_rejected_total",
            "HTTP publish requests rejected, by reason.",
            ["reason"],
            registry=r,
        )
        self.values_stale = Counter(
            "podgrid_registry_values_stale_total",
            "Values ignored because the series already holds a newer one (replays, reordering).",
            registry=r,
        )
        self.series_refused = Counter(
            "podgrid_registry_series_refused_total",
            "New series refused because the store holds max_series already.",
            registry=r,
        )
        self.queries = Counter(
            "podgrid_registry_queries_total",
            "REST queries answered, by format.",
            ["format"],
            registry=r,
        )
        self.longpolls_refused = Counter(
            "podgrid_registry_longpolls_refused_total",
            "Long-polls answered 503 because max_waiters are parked already.",
            registry=r,
        )
        self.wake_answers = Counter(
            "podgrid_registry_wake_answers_total",
            "Woken long-polls answered with a group's shared bytes (one render per group).",
            registry=r,
        )
        self.wake_renders = Counter(
            "podgrid_registry_wake_renders_total",
            "Answers rendered for a woken group of long-polls.",
            registry=r,
        )
        self.query_seconds = Histogram(
            "podgrid_registry_query_duration_seconds",
            "Time to compute and render a REST answer (long-poll waiting excluded; a woken "
            "group's one render is observed once).",
            buckets=QUERY_BUCKETS_S,
            registry=r,
        )

        self.wake_seconds = Histogram(
            "podgrid_registry_wake_seconds",
            "Time from a matching update to the last woken group's answer written.",
            buckets=WAKE_BUCKETS_S,
            registry=r,
        )

    def woke(self, fmt: str, answers: int, render_s: float, wake_s: float) -> None:
        """One woken group: ``answers`` long-polls got the bytes of one render."""
        self.wake_renders.inc()
        self.wake_answers.inc(answers)
        self.queries.labels(format=fmt).inc(answers)
        self.query_seconds.observe(render_s)
        self.wake_seconds.observe(wake_s)

    def watch(self, store: Store, waiters: Callable[[], int], max_servers: int) -> None:
        """Export the store-derived gauges, read at scrape time."""
        self.registry.register(_StoreCollector(store, waiters, max_servers))

    def watch_capacity(self, read: Callable[[], Mapping[str, float]]) -> None:
        """Export the capacity gauges (``CAPACITY_GAUGES`` names), read at scrape time."""
        self.registry.register(_CapacityCollector(read))


CAPACITY_GAUGES = {
    "max_waiters": "Long-polls the registry parks at most (503 with Retry-After past it).",
    "fd_budget": "Connections the registry holds at most (past it: /healthz or 503, closed).",
    "fd_limit": "The soft RLIMIT_NOFILE the registry runs with.",
    "connections": "HTTP connections held now.",
    "waiter_groups": "Distinct queries the parked long-polls ask.",
}


class _CapacityCollector(Collector):
    def __init__(self, read: Callable[[], Mapping[str, float]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        values = self._read()
        for name, text in CAPACITY_GAUGES.items():
            yield GaugeMetricFamily(f"podgrid_registry_{name}", text, value=values.get(name, 0))
        yield CounterMetricFamily(
            "podgrid_registry_connections_over_budget",
            "Connections accepted past fd_budget (answered /healthz or 503, then closed).",
            value=values.get("connections_over_budget", 0),
        )


class _StoreCollector(Collector):
    def __init__(self, store: Store, waiters: Callable[[], int], max_servers: int) -> None:
        self._store = store
        self._waiters = waiters
        self._max_servers = max_servers

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are known only at collection; no duplicate checks needed

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "podgrid_registry_series", "Live series in the store.", value=len(self._store)
        )
        yield GaugeMetricFamily(
            "podgrid_registry_longpoll_waiters",
            "Long-poll queries waiting now.",
            value=self._waiters(),
        )
        yield from self._servers()

    def _servers(self) -> Iterator[Metric]:
        needed = GaugeMetricFamily(
            "podgrid_registry_server_needed_workers",
            "Workers a PoD server still needs (PoD_Masters/<server>/NeededWorkers).",
            labels=["server"],
        )
        attached = GaugeMetricFamily(
            "podgrid_registry_server_workers",
            "Workers attached to a PoD server (PoD_Masters/<server>/Workers).",
            labels=["server"],
        )
        servers: set[str] = set()
        added: set[tuple[str, str]] = set()  # the same server under two farms: export once
        omitted: set[str] = set()
        cluster = Pattern.parse(MASTERS_CLUSTER)
        for s in self._store.select(MATCH_ALL, cluster, MATCH_ALL, _SERVER_PARAMS):
            if isinstance(s.value, str):
                continue
            if s.node not in servers and len(servers) >= self._max_servers:
                omitted.add(s.node)
                continue
            if (s.param, s.node) in added:
                continue
            servers.add(s.node)
            added.add((s.param, s.node))
            family = needed if s.param == MasterParam.NEEDED_WORKERS else attached
            family.add_metric([s.node], float(s.value))
        yield needed
        yield attached
        yield GaugeMetricFamily(
            "podgrid_registry_servers_omitted",
            "PoD servers left out of the per-server gauges (label cardinality cap).",
            value=len(omitted),
        )
