"""The broker service: ``create_app(settings)``, ``run_broker(settings)`` and ``serve``.

Start-up (one ``cleanup_ctx``, closed in reverse): read the configuration hierarchy (publish
interval, attach timeout, the idle timeout of a request that sets none, registry URL; re-read
every ``podConfigRefresh`` s), load the request from the master queue with the broker token,
open the registry publisher, start the TLS Dask scheduler. :func:`run_broker` binds the HTTP
socket first (so the attach URL is known), serves, then calls :meth:`Broker.begin` (first
publication). Shutdown: stop accepting, then :meth:`Broker.stop` (final publication, workers
retired, scheduler closed, final report), then the publisher, the HTTP session and the
refresher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from podgrid.broker import attach, dashboard, keys, owner
from podgrid.broker.cluster import Broker
from podgrid.broker.metrics import BrokerMetrics
from podgrid.broker.publisher import Publication
from podgrid.broker.reporter import Reporter
from podgrid.broker.settings import BrokerSettings
from podgrid.config import Change, ConfigRefresher, ResolvedConfig, default_ldif
from podgrid.config.runtime import capture_signals, private_dir, write_private_file
from podgrid.errors import PodGridError
from podgrid.https import client_session
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.signing import SIGN_SECRET_ENV
from podgrid.monitoring.publish_target import open_publisher
from podgrid.protocol import REQUEST_FINAL, RequestState
from podgrid.protocol.csr import csr_for, new_private_key
from podgrid.web import error_middleware

log = structlog.get_logger("podgrid.broker")

HTTP_SHUTDOWN_TIMEOUT_S = 2.0
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - compared, not bound


class BrokerStartError(PodGridError, RuntimeError):
    """The broker cannot serve its request (final already, or not startable)."""


def _config_listener(app: web.Application) -> object:
    def on_change(resolved: ResolvedConfig, changes: list[Change]) -> None:
        broker, settings = app.get(keys.BROKER), app[keys.SETTINGS]
        if broker is None:
            return
        pod = resolved.settings
        if settings.publish_interval_s is None:
            broker.publish_interval_s = float(pod.publish_interval_s)
        if settings.attach_timeout_s is None:
            broker.places.attach_timeout_s = float(pod.attach_timeout_s)
        # Applies to requests without their own idle_timeout (Broker.watch_once decides).
        broker.server_idle_timeout_s = float(pod.server_idle_timeout_s)

    return on_change


async def https_context(
    mq: MasterQueueClient, request_id: int, directory: Path, cluster_ca_pem: str
) -> ssl.SSLContext:
    """The attach API's server context: a key made here, certified by the master queue.

    The key is written 0600 to ``directory`` (0700) for ``ssl``'s loader and never sent; the
    certificate names the request (``request-<id>.brokers.podgrid``), which agents check.
    Client certificates of the cluster CA are asked for (optional): the owner's opens the
    owner routes (:mod:`podgrid.broker.owner`).
    """
    key_pem = new_private_key()
    reply = await mq.server_certificate(request_id, csr_for(key_pem))
    private_dir(directory)
    write_private_file(directory / "server.key", key_pem)
    write_private_file(directory / "server.pem", reply.certificate)
    cert, key = directory / "server.pem", directory / "server.key"
    return owner.owner_tls_context(cert, key, cluster_ca_pem)


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    refresher = ConfigRefresher(
        settings.config_source or default_ldif(),
        on_change=_config_listener(app),  # type: ignore[arg-type]
    )
    pod = (await refresher.start()).settings
    async with client_session() as session:
        mq = MasterQueueClient(settings.masterqueue_url, settings.token, session)
        record = await mq.get_request(settings.request_id)
        if record.state in REQUEST_FINAL:
            await refresher.stop()
            raise BrokerStartError(f"request {record.id} is already {record.state.value}")
        sink = open_publisher(
            settings.registry or pod.registry_url, settings.registry_token, settings.apmon_password
        )
        broker = Broker(
            settings,
            record,
            publication=Publication(sink, record.id, {}),
            reporter=Reporter(mq, record.id),
            attach_timeout_s=settings.attach_timeout_s or float(pod.attach_timeout_s),
            publish_interval_s=settings.publish_interval_s or float(pod.publish_interval_s),
            server_idle_timeout_s=float(pod.server_idle_timeout_s),
            metrics=app[keys.METRICS],
        )
        try:
            app[keys.HTTPS] = await https_context(
                mq, record.id, settings.https_dir, broker.tls.ca.cert_pem
            )
            await broker.start_scheduler()
            app[keys.BROKER] = broker
            yield
        finally:
            await broker.stop()
            await sink.close()
            await refresher.stop()


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the cluster at a glance."""
    broker = request.app[keys.BROKER]
    return web.json_response(
        {
            "status": "ok",
            "request_id": broker.record.id,
            "state": broker.state.value,
            "workers": broker.places.connected,
            "pending": broker.places.pending,
            "needed": broker.needed(),
            "scheduler_address": broker.scheduler.address,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text."""
    resp = web.Response(body=generate_latest(request.app[keys.METRICS].registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def create_app(settings: BrokerSettings) -> web.Application:
    """Build the broker app; nothing is opened until the app starts."""
    app = web.Application(middlewares=[error_middleware("broker")])
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = BrokerMetrics()
    app.cleanup_ctx.append(_runtime)
    app.router.add_post("/v1/attach", attach.attach)
    app.router.add_post("/v1/detach", attach.detach)
    app.router.add_post("/v1/sign", attach.sign)
    owner.add_routes(app)
    dashboard.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


@dataclass(frozen=True, slots=True)
class RunningBroker:
    """A started broker: its attach URL, its app and its :class:`Broker`."""

    url: str
    app: web.Application
    broker: Broker


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def run_broker(settings: BrokerSettings) -> AsyncIterator[RunningBroker]:
    """Serve the broker (HTTP port 0: a free one) and publish until the block exits."""
    started = time.monotonic()
    sock = _bind(settings.http_host, settings.http_port)
    host, port = sock.getsockname()[:2]
    shown = socket.getfqdn() if host in _WILDCARD_HOSTS else host
    url = settings.public_url or f"https://{shown}:{port}"
    app = create_app(settings.model_copy(update={"public_url": url}))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S)
    try:
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=app[keys.HTTPS]).start()
        broker = app[keys.BROKER]
        broker.begin(url)
        log.info("broker.started", url=url, took_s=round(time.monotonic() - started, 3))
        yield RunningBroker(url, app, broker)
    finally:
        await runner.cleanup()
        sock.close()


async def serve(settings: BrokerSettings) -> RequestState:
    """Run until a stop condition or SIGTERM/SIGINT; the request's final state."""
    signalled = asyncio.Event()
    if settings.sign_secret is None and (secret := os.environ.get(SIGN_SECRET_ENV)):
        # From the launcher, like the token; validated like every other setting.
        settings = BrokerSettings.model_validate({**settings.model_dump(), "sign_secret": secret})
    with capture_signals(lambda sig: signalled.set()):
        async with run_broker(settings) as running:
            broker = running.broker
            waits = [asyncio.ensure_future(e.wait()) for e in (signalled, broker.finished)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if signalled.is_set():
                broker.request_stop(RequestState.DONE, "stopped by a signal")
        assert broker.final is not None
        return broker.final[0]
