"""A small real grid for broker tests: registry, master queue on SQLite, tokens, dask workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
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
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.service import RunningMasterQueue
from podgrid.monitoring.client import RegistryClient
from podgrid.monitoring.service import RunningRegistry
from podgrid.protocol import RequestDetail

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


def slot(agent_id: str, **overrides: Any) -> dict[str, Any]:
    """A slot description that fits DEFAULT_REQUEST."""
    doc: dict[str, Any] = {
        "agent_id": agent_id,
        "site": "Local",
        "ce": "ce1",
        "host": "127.0.0.1",
        "cores": 2,
        "memory_mb": 1024,
        "ttl_s": 3600,
        "packages": ["ROOT::v6-32", "numpy"],
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

    def settings(self, request_id: int, token: str, **overrides: Any) -> BrokerSettings:
        """Broker settings for this grid (fast publish interval, short timeouts)."""
        values: dict[str, Any] = {
            "request_id": request_id,
            "masterqueue_url": self.mq.url,
            "token": token,
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
            yield running

    async def request(self, request_id: int) -> RequestDetail:
        """The request as its owner sees it."""
        async with MasterQueueClient(self.mq.url, self.user_token) as client:
            return await client.get_request(request_id)

    async def attach(
        self, url: str, body: dict[str, Any], token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``POST /v1/attach``; status and JSON body."""
        headers = {"Authorization": f"Bearer {token or self.agent_token}"}
        async with self.session.post(f"{url}/v1/attach", json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

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

    Use as ``async with await inprocess_worker(...)``, or close it yourself.
    """
    from distributed import Worker

    return await Worker(
        grant["scheduler_address"],
        security=worker_security(grant),
        name=grant["name"],
        nthreads=grant["nthreads"],
        memory_limit=grant["memory_limit"],
        local_directory=str(directory),
        dashboard=False,
    )
