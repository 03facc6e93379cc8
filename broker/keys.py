"""Typed application keys: where the broker app keeps its state."""

from __future__ import annotations

import ssl

import aiohttp
from aiohttp import web

from podgrid.broker.cluster import Broker
from podgrid.broker.metrics import BrokerMetrics
from podgrid.broker.settings import BrokerSettings

SETTINGS = web.AppKey("settings", BrokerSettings)
BROKER = web.AppKey("broker", Broker)
HTTPS = web.AppKey("https", ssl.SSLContext)  # the attach API's, from the master queue's CA
METRICS = web.AppKey("metrics", BrokerMetrics)
DASHBOARD_SESSION = web.AppKey("dashboard_session", aiohttp.ClientSession)  # on its socket
