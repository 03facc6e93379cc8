"""The monitoring registry (MonALISA-compatible) and its client.

ApMon UDP and HTTP ingest, MonALISA REST queries with a long-poll extension, Prometheus
metrics and a live dashboard: where PoD servers advertise themselves and agents look.
"""

from podgrid.monitoring.apmon import ApMonDatagram, DatagramError, decode_datagram
from podgrid.monitoring.client import (
    ApMonPublisher,
    HttpPublisher,
    Publisher,
    PublishItem,
    QueryResult,
    RegistryClient,
    Sample,
    rest_path,
    wait_for,
)
from podgrid.monitoring.query import Query, QueryError, parse_query
from podgrid.monitoring.service import RunningRegistry, create_app, run_registry, udp_address
from podgrid.monitoring.settings import RegistrySettings
from podgrid.monitoring.store import Store

__all__ = [
    "ApMonDatagram",
    "ApMonPublisher",
    "DatagramError",
    "HttpPublisher",
    "PublishItem",
    "Publisher",
    "Query",
    "QueryError",
    "QueryResult",
    "RegistryClient",
    "RegistrySettings",
    "RunningRegistry",
    "Sample",
    "Store",
    "create_app",
    "decode_datagram",
    "parse_query",
    "rest_path",
    "run_registry",
    "udp_address",
    "wait_for",
]
