"""A real master queue for the client and CLI tests (launcher ``none``: no broker is started).

State changes a broker would make are driven through the real API with a per-request broker
token (:meth:`RunningGrid.broker`), as the broker will once it exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from podgrid.config.retry import set_testing
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.service import run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.protocol import ConnectionInfo, Role, WorkerInfo

if TYPE_CHECKING:
    from podgrid.broker.cluster import Broker


@dataclass
class RunningGrid:
    """A master queue on a free port plus an admin client to issue tokens."""

    url: str
    admin_token: str
    state_dir: Path
    admin: MasterQueueClient
    _clients: list[MasterQueueClient] = field(default_factory=list)

    async def token(self, role: Role, name: str, request_id: int | None = None) -> str:
        """A fresh token issued through ``POST /v1/tokens``."""
        return await self.admin.create_token(role, name, request_id)

    async def client(self, token: str) -> MasterQueueClient:
        """An open client with ``token``, closed at teardown."""
        c = MasterQueueClient(self.url, token)
        await c.__aenter__()
        self._clients.append(c)
        return c

    async def broker(self, request_id: int) -> MasterQueueClient:
        """A client holding the broker token of ``request_id``."""
        return await self.client(await self.token("broker", f"broker-{request_id}", request_id))

    async def close(self) -> None:
        for c in self._clients:
            await c.close()


def workers(n: int, site: str = "CERN") -> list[WorkerInfo]:
    """``n`` attached workers as a broker reports them."""
    now = datetime.now(UTC)
    return [
        WorkerInfo(
            name=f"tls://10.0.0.{i}:4000",
            host=f"wn{i:03d}.example.org",
            site=site,
            agent_id=f"agent-{i}",
            attached_at=now,
            startup_s=0.25 * i,
        )
        for i in range(1, n + 1)
    ]


CONNECTION = ConnectionInfo(  # what a broker reports: no client certificate, never a key
    address="tls://127.0.0.1:8786",
    tls_ca="-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
)


@dataclass
class SigningBroker:
    """A real :class:`Broker` of one request serving the real ``POST /v1/sign`` (no loops).

    What the owner-side tests need of a broker: the cluster's CA, its signing of the owner's
    CSR (the master queue forwards it here with the request's sign secret) and, when asked,
    its real TLS scheduler with the peer guard.
    """

    broker: Broker
    url: str

    def connection(self, address: str | None = None) -> ConnectionInfo:
        """What this broker reports to the master queue (address, CA, attach URL)."""
        scheduler = self.broker.scheduler
        return ConnectionInfo(
            address=address or (scheduler.address if scheduler else "tls://127.0.0.1:8786"),
            tls_ca=self.broker.tls.ca.cert_pem,
            attach_url=self.url,
        )


@contextlib.asynccontextmanager
async def signing_broker(
    grid: RunningGrid, request_id: int, *, scheduler: bool = False
) -> AsyncIterator[SigningBroker]:
    """A :class:`SigningBroker` for ``request_id`` (with its TLS scheduler if ``scheduler``)."""
    from podgrid.broker import attach, keys
    from podgrid.broker.cluster import Broker
    from podgrid.broker.publisher import Publication
    from podgrid.broker.reporter import Reporter
    from podgrid.broker.service import https_context
    from podgrid.broker.settings import BrokerSettings
    from podgrid.masterqueue.signing import load_sign_key, sign_secret
    from podgrid.monitoring.publish_target import open_publisher
    from podgrid.web import error_middleware

    mq = await grid.broker(request_id)
    record = await mq.get_request(request_id)
    settings = BrokerSettings(
        request_id=request_id,
        masterqueue_url=grid.url,
        token="unused-here",  # the broker's own calls are not made here
        state_dir=grid.state_dir / "signing-broker",
        sign_secret=sign_secret(load_sign_key(grid.state_dir / "sign.key"), request_id),
    )
    sink = open_publisher("udp://127.0.0.1:9", None)
    broker = Broker(
        settings,
        record,
        publication=Publication(sink, request_id, {}),
        reporter=Reporter(mq, request_id),
        attach_timeout_s=30,
        publish_interval_s=1,
        server_idle_timeout_s=0,
    )
    app = web.Application(middlewares=[error_middleware("broker")])
    app[keys.SETTINGS] = settings
    app[keys.BROKER] = broker
    app.router.add_post("/v1/sign", attach.sign)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # HTTPS with the certificate the master queue signs for this request's broker.
    context = await https_context(mq, request_id, settings.https_dir, broker.tls.ca.cert_pem)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        if scheduler:
            await broker.start_scheduler()
        yield SigningBroker(broker, f"https://{host}:{port}")
    finally:
        if broker.scheduler is not None:
            await broker.scheduler.close()
        await runner.cleanup()
        await sink.close()


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[RunningGrid]:
    """A master queue on SQLite in ``tmp_path`` (zero retry back-off)."""
    async with running_grid(tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def running_grid(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningGrid]:
    """A master queue on SQLite in ``tmp_path``; ``overrides``: MasterQueueSettings fields."""
    set_testing(True)
    settings = MasterQueueSettings(
        http_port=0,
        state_dir=tmp_path / "mq",
        launcher="none",
        registry_url="http://127.0.0.1:9",
        queue_publish_interval_s=None,
        **overrides,
    )
    async with run_masterqueue(settings) as mq:
        assert mq.admin_token is not None, "a fresh database must bootstrap an admin token"
        async with MasterQueueClient(mq.url, mq.admin_token) as admin:
            running = RunningGrid(mq.url, mq.admin_token, settings.state_dir, admin)
            try:
                yield running
            finally:
                await running.close()
                set_testing(False)


class FlakyProxy:
    """A real HTTP proxy in front of the master queue that fails on purpose.

    ``faults[(method, path)]`` is a list of actions for the next calls to that route:
    ``"lose"`` forwards the call and then answers 502 (the answer was lost on the way back),
    an int answers that status without forwarding. ``seen`` counts the calls that arrived.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.faults: dict[tuple[str, str], list[str | int]] = {}
        self.seen: dict[tuple[str, str], int] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FlakyProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        assert self._runner is not None
        await self._session.close()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = (request.method, request.path)
        self.seen[route] = self.seen.get(route, 0) + 1
        plan = self.faults.get(route) or []
        action = plan.pop(0) if plan else None
        if isinstance(action, int):
            return web.json_response(
                {"error": "proxy", "message": f"injected {action}", "fields": []}, status=action
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as upstream:
            body = await upstream.read()
            if action == "lose":
                return web.json_response(
                    {"error": "proxy", "message": "bad gateway", "fields": []}, status=502
                )
            return web.Response(
                body=body, status=upstream.status, content_type=upstream.content_type
            )
