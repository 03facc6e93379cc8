"""Prometheus metrics of one master-queue app, on the app's own CollectorRegistry.

Counters and the latency histogram are bumped where things happen; the requests-by-state and
jobs-by-state gauges are refreshed from the database just before each scrape.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from podgrid.protocol import JobState, RequestState

HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class MasterQueueMetrics:
    """Every metric the master queue exports, created once per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_seconds = Histogram(
            "podgrid_masterqueue_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route and status.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS_S,
            registry=r,
        )
        self.requests_by_state = Gauge(
            "podgrid_masterqueue_requests",
            "Server requests in the database, by state.",
            ["state"],
            registry=r,
        )
        self.jobs_by_state = Gauge(
            "podgrid_masterqueue_jobs",
            "Batch jobs in the database, by state.",
            ["state"],
            registry=r,
        )
        self.matches = Counter(
            "podgrid_masterqueue_matches_total",
            "Match calls answered, by result (claimed or empty).",
            ["result"],
            registry=r,
        )
        self.launcher_starts = Counter(
            "podgrid_masterqueue_launcher_starts_total",
            "Brokers started by the launcher.",
            registry=r,
        )
        self.launcher_failures = Counter(
            "podgrid_masterqueue_launcher_failures_total",
            "Brokers that failed: could not start, exited early, or were stopped, by reason.",
            ["reason"],
            registry=r,
        )
        self.sweeps = Counter(
            "podgrid_masterqueue_sweeps_total",
            "Sweep runs, by kind (leases, requests, purge).",
            ["kind"],
            registry=r,
        )
        self.swept = Counter(
            "podgrid_masterqueue_swept_total",
            "Records a sweep moved or deleted, by kind.",
            ["kind"],
            registry=r,
        )
        self.loop_errors = Counter(
            "podgrid_masterqueue_loop_errors_total",
            "Background loop iterations that failed (and were retried next tick), by loop.",
            ["loop"],
            registry=r,
        )

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answered HTTP request."""
        self.http_seconds.labels(method=method, route=route, status=str(status)).observe(seconds)

    def set_state_counts(self, requests: Mapping[str, int], jobs: Mapping[str, int]) -> None:
        """Replace the by-state gauges (every state is exported, zero when absent)."""
        for rs in RequestState:
            self.requests_by_state.labels(state=rs.value).set(requests.get(rs.value, 0))
        for js in JobState:
            self.jobs_by_state.labels(state=js.value).set(jobs.get(js.value, 0))
