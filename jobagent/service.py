"""The agent's own small HTTP endpoint: ``GET /healthz`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from podgrid.jobagent.keys import STATUS, StatusFn
from podgrid.web import start_site


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the agent's state and slot time at a glance."""
    return web.json_response({"status": "ok", **request.app[STATUS]()})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: this process's Prometheus metrics (seconds per activity, retries...)."""
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(status: StatusFn) -> web.Application:
    """The agent's HTTP app; ``status`` returns what ``/healthz`` shows."""
    app = web.Application()
    app[STATUS] = status
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serve_http(
    host: str, port: int, status: StatusFn, context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve the app on ``host:port`` (0: a free port), HTTPS with ``context``; yields its URL.

    ``context`` comes from :func:`podgrid.https.listen_tls` (plain HTTP only on loopback or
    with ``--insecure-http``).
    """
    runner = web.AppRunner(create_app(status), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        yield await start_site(runner, host, port, context)
    finally:
        await runner.cleanup()
