"""A small real grid for broker tests: registry, master queue on SQLite, tokens, dask workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from podgrid.broker.service import RunningBroker, run_broker
from podgrid.broker.settings import BrokerSettings
from podgrid.client import NoConnectionYet, PodGrid
from podgrid.jobagent.attach import BrokerPass
from podgrid.jobagent.vouch import Vouchers
from podgrid.masterqueue import keys as mq_keys
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.service import RunningMasterQueue
from podgrid.masterqueue.signing import attach_ticket, load_sign_key, sign_secret
from podgrid.monitoring.client import RegistryClient
from podgrid.monitoring.service import RunningRegistry
from podgrid.protocol import ConnectionInfo, RequestDetail
from podgrid.protocol.csr import csr_for, new_private_key

DEFAULT_REQUEST = """
[server]
name = "broker-test"
min_workers = 2
max_workers = 2
max_wait = "10m"
ttl = "1h"
[worker]
cores = 1
memory = "256MiB"
packages = ["ROOT::v6-32"]
"""


def broker_connector(mq: RunningMasterQueue) -> aiohttp.TCPConnector:
    """A connector trusting the master queue's broker CA for the tests' raw broker calls.

    The tests call brokers at ``https://127.0.0.1:PORT``, so the name check is off here; the
    agents' own calls check ``request-<id>.brokers.podgrid`` (tests/broker/test_https.py).
    """
    context = ssl.create_default_context(cadata=mq.app[mq_keys.BROKER_CA].cert_pem)
    context.check_hostname = False
    return aiohttp.TCPConnector(ssl=context)


_PLACEHOLDER_KEY = new_private_key()
PLACEHOLDER_CSR = csr_for(_PLACEHOLDER_KEY)  # a valid CSR for bodies posted as they are


def slot(agent_id: str, **overrides: Any) -> dict[str, Any]:
    """An attach body (slot plus a valid CSR) that fits DEFAULT_REQUEST."""
    doc: dict[str, Any] = {
        "agent_id": agent_id,
        "site": "Local",
        "ce": "ce1",
        "host": "127.0.0.1",
        "cores": 2,
        "memory_mb": 1024,
        "ttl_s": 3600,
        "packages": ["ROOT::v6-32", "numpy"],
        "csr": PLACEHOLDER_CSR,
    }
    doc.update(overrides)
    return doc


@dataclass
class Grid:
    """Registry + master queue + tokens, and helpers to run brokers and workers against them."""

    registry: RunningRegistry
    mq: RunningMasterQueue
    tmp: Path
    user_token: str
    agent_token: str
    session: aiohttp.ClientSession
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    request_of: dict[str, int] = field(default_factory=dict)  # broker URL -> request id

    @property
    def udp(self) -> str:
        host, port = self.registry.udp_addr
        return f"udp://{host}:{port}"

    async def submit(self, text: str = DEFAULT_REQUEST) -> tuple[int, str]:
        """Submit a request as the user; its id and a broker token made for it."""
        async with MasterQueueClient(self.mq.url, self.user_token) as client:
            record = await client.submit_request(text, "toml")
        token = await self.mq.store.create_token("broker", f"broker-{record.id}", record.id)
        return record.id, token

    def ticket(self, request_id: int, agent: str = "agent-1", ttl_s: int = 300) -> str:
        """An attach ticket for ``request_id``'s broker, as ``GET /v1/servers`` gives agents."""
        return attach_ticket(self.sign_secret(request_id), agent, int(time.time()) + ttl_s)

    def ticket_for(self, url: str) -> str:
        """The ticket for the broker at ``url`` (one this grid started)."""
        return self.ticket(self.request_of[url])

    def sign_secret(self, request_id: int) -> str:
        """The sign secret the master queue's launcher would give this request's broker."""
        key = load_sign_key(self.mq.app[mq_keys.SETTINGS].sign_key_path)
        return sign_secret(key, request_id)

    def settings(self, request_id: int, token: str, **overrides: Any) -> BrokerSettings:
        """Broker settings for this grid (fast publish interval, short timeouts)."""
        values: dict[str, Any] = {
            "request_id": request_id,
            "masterqueue_url": self.mq.url,
            "token": token,
            "sign_secret": self.sign_secret(request_id),
            "registry": self.udp,
            "state_dir": self.tmp / "state",
            "publish_interval_s": 0.2,
            "heartbeat_interval_s": 0.3,
            "attach_timeout_s": 20.0,
            "shutdown_timeout_s": 5.0,
        }
        values.update(overrides)
        return BrokerSettings(**values)

    @contextlib.asynccontextmanager
    async def broker(
        self, text: str = DEFAULT_REQUEST, **overrides: Any
    ) -> AsyncIterator[RunningBroker]:
        """Submit a request and run a broker for it (in this process)."""
        request_id, token = await self.submit(text)
        async with run_broker(self.settings(request_id, token, **overrides)) as running:
            self.request_of[running.url] = request_id
            yield running

    async def owner_connection(self, request_id: int) -> ConnectionInfo:
        """The owner's connection, as ``PodGrid.connection`` gets it (key made here, CSR sent).

        Waits (up to 10 s) for the broker's first report, which brings the attach URL.
        """
        deadline = time.monotonic() + 10
        async with PodGrid(MasterQueueClient(self.mq.url, self.user_token)) as pod:
            while True:
                try:
                    return await pod.connection(request_id)
                except NoConnectionYet:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)

    async def request(self, request_id: int) -> RequestDetail:
        """The request as its owner sees it."""
        async with MasterQueueClient(self.mq.url, self.user_token) as client:
            return await client.get_request(request_id)

    async def attach(
        self, url: str, body: dict[str, Any], token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``POST /v1/attach``; status and JSON body.

        Like an agent, it makes a fresh key and sends a CSR for it unless ``body`` has a CSR
        of its own (not :data:`PLACEHOLDER_CSR`); a 200 body then gets that key as ``tls_key``
        (added here: the broker never sends one).
        """
        key = None
        if body.get("csr", PLACEHOLDER_CSR) == PLACEHOLDER_CSR:
            key = new_private_key()
            body = {**body, "csr": csr_for(key)}
        headers = {"Authorization": f"Bearer {token or self.ticket_for(url)}"}
        async with self.session.post(f"{url}/v1/attach", json=body, headers=headers) as resp:
            status, answer = resp.status, await resp.json(content_type=None)
        if status == 200 and key is not None:
            assert "tls_key" not in answer, "a broker must never send a private key"
            answer["tls_key"] = key
        return status, answer

    async def registry_value(self, request_id: int, param: str) -> str | int | float | None:
        """The last value of ``PoD_Masters/<id>/<param>`` (None when absent)."""
        async with RegistryClient(self.registry.http_url) as client:
            found = await client.query(["*", "PoD_Masters", str(request_id), param])
        return found[-1].value if found else None

    async def wait_registry(
        self, request_id: int, param: str, value: object, timeout_s: float = 10
    ) -> None:
        """Wait until the registry shows ``value`` for ``param``."""
        await until(lambda: self.registry_value(request_id, param), value, timeout_s)

    def start_worker(self, grant: dict[str, Any]) -> subprocess.Popen[bytes]:
        """A real ``dask worker`` process with the credentials of an attach grant."""
        d = self.tmp / "workers" / grant["name"]
        d.mkdir(parents=True, exist_ok=True)
        for key, file in (("tls_ca", "ca.pem"), ("tls_cert", "cert.pem"), ("tls_key", "key.pem")):
            (d / file).write_text(grant[key])
        argv = [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            grant["scheduler_address"],
            "--tls-ca-file",
            str(d / "ca.pem"),
            "--tls-cert",
            str(d / "cert.pem"),
            "--tls-key",
            str(d / "key.pem"),
            "--name",
            grant["name"],
            "--nthreads",
            str(grant["nthreads"]),
            "--memory-limit",
            grant["memory_limit"],
            "--lifetime",
            f"{grant['lifetime_s']}s",
            "--no-nanny",
            "--no-dashboard",
        ]
        log = (d / "worker.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=d)
        log.close()
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        """Kill what is left of the worker processes this grid started."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def vouched(grid: Grid, running: RunningBroker, timeout_s: float = 10) -> BrokerPass:
    """The pass a real agent gets for ``running`` from the master queue (``GET /v1/servers``).

    Waits for the broker's first report, which brings its attach URL to the master queue.
    """
    deadline = time.monotonic() + timeout_s
    async with MasterQueueClient(grid.mq.url, grid.agent_token) as client:
        vouchers = Vouchers(client, refresh_min_s=0.05)
        while (found := await vouchers.genuine(str(running.broker.record.id), running.url)) is None:
            assert time.monotonic() < deadline, "the master queue never vouched for the broker"
            await asyncio.sleep(0.05)
    return found


async def until(probe: Any, expected: object, timeout_s: float) -> None:
    """Poll the async ``probe`` until it returns ``expected``; AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = await probe()
        if last == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {expected!r}, still {last!r} after {timeout_s} s")


def env_without_tokens() -> dict[str, str]:
    """The environment minus PoD Grid variables (subprocess tests set their own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PODGRID_")}


def worker_security(grant: dict[str, Any]) -> Any:
    """``distributed.Security`` of a worker holding an attach grant's credentials."""
    from distributed.security import Security

    return Security(
        require_encryption=True,
        tls_ca_file=grant["tls_ca"],
        tls_worker_cert=grant["tls_cert"],
        tls_worker_key=grant["tls_key"],
        tls_client_cert=grant["tls_cert"],
        tls_client_key=grant["tls_key"],
    )


async def inprocess_worker(grant: dict[str, Any], directory: Path) -> Any:
    """A started real Dask worker in this process (faster than a ``dask worker`` process).

    Use as ``async with await inprocess_worker(...)``, or close it yourself. The grant's
    memory limit is not applied: an in-process worker would measure the whole test process
    (hundreds of MB after a storm of attaches) and pause itself, so no task would run.
    """
    from distributed import Worker

    return await Worker(
        grant["scheduler_address"],
        security=worker_security(grant),
        name=grant["name"],
        nthreads=grant["nthreads"],
        memory_limit=0,
        local_directory=str(directory),
        dashboard=False,
    )
