"""Typed application keys: where the broker app keeps its state."""

from __future__ import annotations

from aiohttp import web

from podgrid.broker.agent_auth import AgentTokens
from podgrid.broker.cluster import Broker
from podgrid.broker.metrics import BrokerMetrics
from podgrid.broker.settings import BrokerSettings

SETTINGS = web.AppKey("settings", BrokerSettings)
BROKER = web.AppKey("broker", Broker)
TOKENS = web.AppKey("tokens", AgentTokens)
METRICS = web.AppKey("metrics", BrokerMetrics)
