"""Typed application keys: where the master-queue app keeps its state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from podgrid.masterqueue.loops import LaunchLoop
from podgrid.masterqueue.metrics import MasterQueueMetrics
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.masterqueue.store import Store
from podgrid.masterqueue.token_cache import TokenCache
from podgrid.pki import CertificateAuthority


@dataclass
class Runtime:
    """What is learned while the app runs: its URL, the bootstrapped admin token, a wake-up."""

    url: str | None = None
    admin_token: str | None = None
    wake_launcher: asyncio.Event = field(default_factory=asyncio.Event)


SETTINGS = web.AppKey("settings", MasterQueueSettings)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", MasterQueueMetrics)
TOKENS = web.AppKey("tokens", TokenCache)
RUNTIME = web.AppKey("runtime", Runtime)
BROKER_CA = web.AppKey("broker_ca", CertificateAuthority)
# The launcher loop (absent with launcher="none"); tests read its handles.
LAUNCH_LOOP = web.AppKey("launch_loop", LaunchLoop)
