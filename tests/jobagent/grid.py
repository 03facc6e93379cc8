"""A real little grid for the agent tests: registry, master queue, LDIF config, agent processes.

Everything is real and on loopback: the registry (HTTP + ApMon UDP), the master queue on
SQLite (launcher ``none`` or ``local``, which then starts real ``podgrid broker serve``
processes), and agents started as ``python -m podgrid jobagent run`` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podgrid.config.hierarchy import default_ldif
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.service import run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.monitoring.client import HttpPublisher, RegistryClient
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import RegistrySettings
from podgrid.protocol import JobSpec
from tests.harness.logs import log_events

REGISTRY_TOKEN = "registry-test-token-0123456789"


def ldif_with(path: Path, site: str, ce: str, **config: Any) -> str:
    """The embedded default LDIF plus ``site``/``ce``, the CE carrying ``config`` (pod*)."""
    text = Path(default_ldif()).read_text()
    attrs = "".join(f"{k}: {v}\n" for k, v in config.items())
    text += (
        f"\ndn: ou={site},ou=Sites,o=podgrid\nobjectClass: organizationalUnit\n"
        f"objectClass: podConfig\nou: {site}\n\n"
        f"dn: ou=Services,ou={site},ou=Sites,o=podgrid\nobjectClass: organizationalUnit\n"
        f"ou: Services\n\n"
        f"dn: ou=CE,ou=Services,ou={site},ou=Sites,o=podgrid\nobjectClass: organizationalUnit\n"
        f"ou: CE\n\n"
        f"dn: name={ce},ou=CE,ou=Services,ou={site},ou=Sites,o=podgrid\n"
        f"objectClass: podComputingElement\nobjectClass: podConfig\nname: {ce}\n{attrs}"
    )
    path.write_text(text)
    return str(path)


@dataclass
class AgentProcess:
    """One ``podgrid jobagent run`` subprocess and its private directory."""

    agent_id: str
    state_dir: Path
    process: subprocess.Popen[bytes]

    def status(self) -> dict[str, Any]:
        """The agent's ``agent.json`` (empty until it wrote one)."""
        try:
            return dict(json.loads((self.state_dir / "agent.json").read_text()))
        except (OSError, ValueError):
            return {}

    @property
    def state(self) -> str | None:
        """The agent's current state as it last wrote it."""
        return self.status().get("params", {}).get("State")

    def log(self) -> str:
        """What the agent printed (JSON log lines)."""
        try:
            return (self.state_dir / "agent.log").read_text(errors="replace")
        except OSError:
            return ""

    def events(self, name: str) -> list[dict[str, Any]]:
        """The agent's log events called ``name``."""
        return log_events(self.log(), name)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL the group if it does not leave in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@dataclass
class Grid:
    """The running services, tokens and the agents started so far."""

    tmp: Path
    registry_url: str
    udp: tuple[str, int]
    mq_url: str
    admin: MasterQueueClient
    agent_token: str
    user: MasterQueueClient
    registry: RegistryClient
    publisher: HttpPublisher
    mq_app: Any
    agents: list[AgentProcess] = field(default_factory=list)

    def start_agent(self, name: str, config: str, *extra: str, site: str, ce: str) -> AgentProcess:
        """Start an agent subprocess (publishing over UDP, 1 s config refresh by default)."""
        state_dir = self.tmp / "agents" / name
        state_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "podgrid",
            "jobagent",
            "run",
            "--site",
            site,
            "--ce",
            ce,
            "--agent-id",
            name,
            "--state-dir",
            str(state_dir),
            "--config",
            config,
            "--registry-url",
            self.registry_url,
            "--masterqueue-url",
            self.mq_url,
            "--registry-publish",
            f"udp://{self.udp[0]}:{self.udp[1]}",
            *extra,
        ]
        env = {**os.environ, "PODGRID_TOKEN": self.agent_token}
        env.pop("PODGRID_REGISTRY_TOKEN", None)
        with open(state_dir / "agent.log", "ab") as out:
            proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        agent = AgentProcess(name, state_dir, proc)
        self.agents.append(agent)
        return agent

    async def submit_job(self, *command: str, ttl_s: int = 60, **spec: Any) -> int:
        """Submit a batch job as the test user; its id."""
        record = await self.user.submit_job(JobSpec(command=list(command), ttl_s=ttl_s, **spec))
        return record.id

    async def job_state(self, job_id: int) -> str:
        """The job's state in the master queue."""
        return str((await self.user.get_job(job_id)).state)

    async def publish_server(
        self, request_id: str, address: str, needed: int, requirements: str = "{}"
    ) -> None:
        """Publish a (pretend) server in the registry as a broker would."""
        await self.publisher.send(
            "PoD_Masters",
            request_id,
            {"Address": address, "NeededWorkers": needed, "Requirements": requirements},
        )


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str, step_s: float = 0.05
) -> float:
    """Wait until ``check()`` is true; seconds it took. AssertionError naming ``what`` otherwise."""
    started = time.monotonic()
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(step_s)


@contextlib.asynccontextmanager
async def running_grid(tmp: Path, *, launcher: str = "none", **mq: Any) -> AsyncIterator[Grid]:
    """Registry + master queue (+ brokers with ``launcher='local'``); agents stopped at exit."""
    reg_settings = RegistrySettings(
        http_port=0,
        udp_port=0,
        state_dir=tmp / "registry",
        publish_tokens=frozenset({REGISTRY_TOKEN}),
    )
    async with run_registry(reg_settings) as reg:
        udp = f"udp://{reg.udp_addr[0]}:{reg.udp_addr[1]}"
        mq_settings = MasterQueueSettings(
            http_port=0,
            state_dir=tmp / "mq",
            launcher=launcher,  # type: ignore[arg-type]
            registry_url=udp,
            stop_brokers_on_exit=True,
            **mq,
        )
        async with run_masterqueue(mq_settings) as mqs:
            assert mqs.admin_token is not None
            async with (
                MasterQueueClient(mqs.url, mqs.admin_token) as admin,
                RegistryClient(reg.http_url) as registry,
                HttpPublisher(reg.http_url, REGISTRY_TOKEN) as publisher,
            ):
                agent_token = await admin.create_token("agent", "test-agents")
                user_token = await admin.create_token("user", "alice")
                async with MasterQueueClient(mqs.url, user_token) as user:
                    grid = Grid(
                        tmp,
                        reg.http_url,
                        reg.udp_addr,
                        mqs.url,
                        admin,
                        agent_token,
                        user,
                        registry,
                        publisher,
                        mqs.app,
                    )
                    try:
                        yield grid
                    finally:
                        await asyncio.to_thread(_stop_all, grid.agents)


def _stop_all(agents: list[AgentProcess]) -> None:
    for agent in agents:
        if agent.process.poll() is None:
            agent.process.send_signal(signal.SIGTERM)
    for agent in agents:
        agent.stop(timeout_s=20.0)


__all__ = ["AgentProcess", "Grid", "eventually", "ldif_with", "running_grid"]
