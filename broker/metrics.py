"""Prometheus metrics of one broker, in a registry of its own (several brokers in one test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ATTACH_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class BrokerMetrics:
    """``podgrid_broker_*``: attaches by outcome, places, publications, reports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.attaches = Counter(
            "podgrid_broker_attaches_total",
            "Attach calls by outcome (granted, full, closed, requirements, unauthorized).",
            ["outcome"],
            registry=r,
        )
        self.attach_seconds = Histogram(
            "podgrid_broker_attach_seconds",
            "Time to answer one attach call.",
            buckets=ATTACH_BUCKETS_S,
            registry=r,
        )
        self.workers = Gauge(
            "podgrid_broker_workers", "Dask workers connected to the scheduler.", registry=r
        )
        self.pending = Gauge(
            "podgrid_broker_pending_places", "Places granted but not yet connected.", registry=r
        )
        self.expired = Counter(
            "podgrid_broker_reservations_expired_total",
            "Reservations freed because no worker connected within podAttachTimeout.",
            registry=r,
        )
        self.publications = Counter(
            "podgrid_broker_publications_total",
            "Publications to the registry by result (sent, failed).",
            ["result"],
            registry=r,
        )
        self.reports = Counter(
            "podgrid_broker_reports_total",
            "State reports to the master queue by result (ok, failed).",
            ["result"],
            registry=r,
        )
