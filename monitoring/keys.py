"""Typed application keys: where the registry app keeps its state."""

from __future__ import annotations

from aiohttp import web

from podgrid.monitoring.capacity import Capacity, Listening
from podgrid.monitoring.ingest import Ingestor
from podgrid.monitoring.longpoll import LongPollHub
from podgrid.monitoring.metrics import RegistryMetrics
from podgrid.monitoring.settings import RegistrySettings
from podgrid.monitoring.store import Store

SETTINGS = web.AppKey("settings", RegistrySettings)
STORE = web.AppKey("store", Store)
HUB = web.AppKey("longpoll_hub", LongPollHub)
METRICS = web.AppKey("metrics", RegistryMetrics)
INGESTOR = web.AppKey("ingestor", Ingestor)
# The (host, port) the ApMon UDP endpoint is bound to; set once the endpoint is open.
UDP_ADDRESS = web.AppKey("udp_address", tuple[str, int])
CAPACITY = web.AppKey("capacity", Capacity)
# The listening site once started: its open connections and over-budget refusals.
LISTENING = web.AppKey("listening", Listening)
