"""The registry service: ``create_app(settings)`` and ``run_registry(settings)``.

The app holds the store, the long-poll hub, the metrics and the ingestor under AppKeys; the
ApMon UDP endpoint and the expiry sweeper are resources opened in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from aiohttp import web

from podgrid.https import listen_tls
from podgrid.monitoring import keys, views
from podgrid.monitoring.answer import render
from podgrid.monitoring.capacity import Capacity, GatedSite, Listening, raise_fd_limit
from podgrid.monitoring.ingest import ApMonProtocol, Ingestor
from podgrid.monitoring.longpoll import LongPollHub
from podgrid.monitoring.metrics import RegistryMetrics
from podgrid.monitoring.publish import publish
from podgrid.monitoring.settings import RegistrySettings
from podgrid.monitoring.store import Store
from podgrid.web import error_middleware

log = structlog.get_logger("podgrid.monitoring")

SWEEP_MAX_INTERVAL_S = 5.0  # expired series are forgotten at least this often
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024  # absorb bursts while the loop is busy
SHUTDOWN_TIMEOUT_S = 5.0


async def _udp_endpoint(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: ApMonProtocol(app[keys.INGESTOR]),
        local_addr=(settings.udp_host, settings.udp_port),
    )
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
    host, port = transport.get_extra_info("sockname")[:2]
    app[keys.UDP_ADDRESS] = (str(host), int(port))
    log.info("registry.udp_listening", host=host, port=port)
    try:
        yield
    finally:
        transport.close()


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    store = app[keys.STORE]
    interval_s = min(SWEEP_MAX_INTERVAL_S, max(app[keys.SETTINGS].series_ttl_s / 4, 0.05))

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                removed = store.sweep()
            except Exception:  # keep sweeping: a failed pass must not let memory grow
                log.exception("registry.sweep_failed")
                continue
            if removed:
                log.debug("registry.series_expired", count=removed)

    task = asyncio.create_task(loop(), name="registry-sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _release_long_polls(app: web.Application) -> None:
    app[keys.HUB].release_all()


def create_app(settings: RegistrySettings) -> web.Application:
    """Build the registry app; nothing is opened until the app starts."""
    app = web.Application(
        middlewares=[error_middleware("registry")], client_max_size=settings.max_publish_bytes
    )
    store = Store(
        history_points=settings.history_points,
        series_ttl_s=settings.series_ttl_s,
        max_series=settings.max_series,
    )
    metrics = RegistryMetrics()
    capacity = Capacity.derive(
        resource.getrlimit(resource.RLIMIT_NOFILE)[0], settings.fd_budget, settings.max_waiters
    )
    hub = LongPollHub(
        capacity.max_waiters, render=lambda query: render(store, query), observe=metrics.woke
    )
    metrics.watch(store, lambda: hub.waiting, settings.max_metric_servers)
    listening = Listening()
    metrics.watch_capacity(
        lambda: {
            "max_waiters": capacity.max_waiters,
            "fd_budget": capacity.fd_budget,
            "fd_limit": capacity.fd_limit,
            "connections": listening.connections(),
            "connections_over_budget": listening.over_budget(),
            "waiter_groups": hub.groups,
        }
    )
    app[keys.SETTINGS] = settings
    app[keys.CAPACITY] = capacity
    app[keys.LISTENING] = listening
    app[keys.STORE] = store
    app[keys.HUB] = hub
    app[keys.METRICS] = metrics
    app[keys.INGESTOR] = Ingestor(
        farm=settings.farm,
        store=store,
        hub=hub,
        metrics=metrics,
        apmon_password=settings.apmon_password,
    )
    app.cleanup_ctx.append(_udp_endpoint)
    app.cleanup_ctx.append(_sweeper)
    app.on_shutdown.append(_release_long_polls)
    app.router.add_get("/rest/{tail:.*}", views.rest)
    app.router.add_post("/publish", publish)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/", views.index)
    app.router.add_get("/static/{name}", views.static)
    return app


def _url(runner: web.AppRunner, context: ssl.SSLContext | None) -> str:
    host, port = runner.addresses[-1][:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'http' if context is None else 'https'}://{shown}:{port}"


def udp_address(app: web.Application) -> tuple[str, int]:
    """The (host, port) the ApMon endpoint is bound to (once the app has started)."""
    return app[keys.UDP_ADDRESS]


@dataclass(frozen=True, slots=True)
class RunningRegistry:
    """A started registry: where to reach it, and its app (store, metrics, ...)."""

    http_url: str
    udp_addr: tuple[str, int]
    app: web.Application


@contextlib.asynccontextmanager
async def run_registry(settings: RegistrySettings) -> AsyncIterator[RunningRegistry]:
    """Serve the registry on its HTTP and UDP addresses (port 0: a free one) until exit."""
    context = listen_tls(
        settings.http_host,
        settings.tls_cert,
        settings.tls_key,
        insecure_http=settings.insecure_http,
    )
    limit = raise_fd_limit()
    app = create_app(settings)
    capacity = app[keys.CAPACITY]
    log.info(
        "registry.capacity",
        fd_soft_limit_before=limit.soft_before,
        fd_soft_limit=limit.soft,
        fd_hard_limit=limit.hard,
        fd_budget=capacity.fd_budget,
        max_waiters=capacity.max_waiters,
        max_wait_s=settings.max_wait_s,
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = GatedSite(
            runner,
            settings.http_host,
            settings.http_port,
            ssl_context=context,
            fd_budget=capacity.fd_budget,
            health=lambda: views.health(app),
            retry_after_s=settings.retry_after_s,
            reuse_port=settings.reuse_port,
        )
        await site.start()
        app[keys.LISTENING].site = site
        url = _url(runner, context)
        running = RunningRegistry(url, udp_address(app), app)
        log.info("registry.started", http_url=running.http_url, udp=list(running.udp_addr))
        yield running
    finally:
        await runner.cleanup()
        log.info("registry.stopped")
