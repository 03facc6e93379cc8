"""HTTP handlers of the registry: REST query with long-poll, health, metrics, dashboard."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import HttpVersion11, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from podgrid.errors import BadRequest, ServiceUnavailable
from podgrid.monitoring import keys
from podgrid.monitoring.answer import NOW_HEADER, AlreadySent, render, request_id_line
from podgrid.monitoring.longpoll import Outcome, TooManyWaiters
from podgrid.monitoring.query import QueryError, parse_query
from podgrid.monitoring.search import changed_since
from podgrid.monitoring.store import Store
from podgrid.web import error_response

STATIC_DIR = Path(__file__).parent / "static"


def _now(store: Store) -> dict[str, str]:
    return {NOW_HEADER: str(store.clock_ms())}


def _direct(request: web.Request) -> asyncio.Transport | None:
    """The transport the hub may write a woken answer to itself (plain keep-alive GETs)."""
    if request.method != "GET" or request.version != HttpVersion11 or not request.keep_alive:
        return None
    transport = request.transport
    return transport if isinstance(transport, asyncio.Transport) else None


async def rest(request: web.Request) -> web.StreamResponse:
    """``GET /rest/...``: MonALISA query; with ``?wait=`` hold until a matching update."""
    app = request.app
    settings, store, metrics = app[keys.SETTINGS], app[keys.STORE], app[keys.METRICS]
    try:
        query = parse_query(
            request.match_info["tail"],
            request.query,
            request.headers.get("Accept"),
            settings.max_wait_s,
        )
    except QueryError as e:
        raise BadRequest(str(e), code="invalid_query", headers=_now(store)) from e
    if query.wait_s is not None and not (
        query.since_ms is not None and changed_since(store, query, query.since_ms)
    ):
        transport = _direct(request)
        try:
            outcome = await app[keys.HUB].wait(
                query,
                query.wait_s,
                key=(request.match_info["tail"], query.fmt),
                transport=transport,
                tail=b"" if transport is None else request_id_line(request),
            )
        except TooManyWaiters as e:
            metrics.longpolls_refused.inc()
            headers = {**_now(store), "Retry-After": str(settings.retry_after_s)}
            refused = error_response(
                ServiceUnavailable(str(e), code="too_many_waiters", headers=headers)
            )
            refused.force_close()  # free the descriptor: the agent comes back after Retry-After
            return refused
        if outcome is Outcome.SENT:
            return AlreadySent()
    started = time.perf_counter()
    resp = render(store, query).response()
    metrics.query_seconds.observe(time.perf_counter() - started)
    metrics.queries.labels(format=query.fmt).inc()
    return resp


def health(app: web.Application) -> dict[str, Any]:
    """What ``/healthz`` says: liveness, long-poll support, and how full the registry is."""
    settings, capacity, listening = app[keys.SETTINGS], app[keys.CAPACITY], app[keys.LISTENING]
    return {
        "status": "ok",
        "farm": settings.farm,
        "series": len(app[keys.STORE]),
        "longpoll": True,
        "max_wait_s": settings.max_wait_s,
        "waiters": app[keys.HUB].waiting,
        "max_waiters": capacity.max_waiters,
        "connections": listening.connections(),
        "fd_budget": capacity.fd_budget,
    }


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus the few facts a client needs (farm, long-poll support, capacity)."""
    return web.json_response(health(request.app))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the app's registry."""
    body = generate_latest(request.app[keys.METRICS].registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def index(request: web.Request) -> web.FileResponse:
    """The dashboard page."""
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise web.HTTPNotFound(text="dashboard not installed\n")
    return web.FileResponse(page)


async def static(request: web.Request) -> web.FileResponse:
    """Files of the dashboard (no sub-directories, no dot-files)."""
    name = request.match_info["name"]
    path = STATIC_DIR / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound(text=f"no static file {name!r}\n")
    return web.FileResponse(path)
