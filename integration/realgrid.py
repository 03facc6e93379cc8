"""The whole grid as separate processes on loopback: MariaDB, slapd, registry, master queue.

:func:`real_grid` starts, for one test, a fresh database on the session's throw-away MariaDB
(``tests.harness.mariadb``), a private slapd serving the packaged LDIF plus one site and CE
(``tests.harness.slapd``; private, so a test may stop it), ``podgrid monitoring serve`` and the
master queue (``python -m integration.serve_mq``: the service of ``podgrid masterqueue serve``
with a short lease), each in its own process group with its log in the test's temp dir. The
master queue's ``local`` launcher starts real ``podgrid broker serve`` processes; agents are
``podgrid jobagent run`` processes or a ``podgrid site run`` factory. Every ApMon sender uses
the registry's password. At exit everything is stopped in order (agents and sites, master
queue, registry, slapd) and anything of this test's process groups still alive is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from podgrid.masterqueue.client import MasterQueueClient
from podgrid.monitoring.client import RegistryClient
from tests.harness.logs import log_events
from tests.harness.mariadb import MariaDB
from tests.harness.ports import free_port
from tests.harness.slapd import SlapdServer, start_slapd
from tests.jobagent.grid import AgentProcess, eventually, ldif_with

REPO = Path(__file__).resolve().parents[1]
SITE, CE = "IntegSite", "integ-ce"
CE_DN = f"name={CE},ou=CE,ou=Services,ou={SITE},ou=Sites,o=podgrid"
APMON_PASSWORD = "integration-apmon-password"
REGISTRY_TOKEN = "integration-registry-token-0123456789"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
SERVERS = frozenset({"mariadbd", "slapd"})  # the harness's own, restarted by some tests
PUBLISH_INTERVAL_S = 0.5  # the brokers' podPublishInterval here
BROKER = [
    sys.executable, "-m", "podgrid", "broker", "serve",
    "--publish-interval", str(PUBLISH_INTERVAL_S), "--attach-timeout", "20",
]  # fmt: skip


def podgrid(*args: str) -> list[str]:
    """``python -m podgrid ARGS`` with this interpreter."""
    return [sys.executable, "-m", "podgrid", *args]


@dataclass
class Service:
    """One long-running process of the grid, in its own process group, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the process (again) and, with a ``health_url``, wait until it answers 200."""
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        if self.health_url is not None:
            self.wait_healthy()

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until ``GET health_url`` answers 200; AssertionError with the log otherwise."""
        assert self.health_url is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.health_url, timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not come up; its log:\n{self.log()[-4000:]}")

    @property
    def pid(self) -> int:
        """The process id (the group's leader)."""
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` and wait; SIGKILL the whole group if it does not leave in time."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        """What the process printed."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def events(self, name: str) -> list[dict[str, Any]]:
        """The process's JSON log events called ``name``."""
        return log_events(self.log(), name)


@dataclass
class RealGrid:
    """The running grid of one test: its services, tokens, agents and sites."""

    tmp: Path
    mariadb: MariaDB
    db_name: str
    slapd: SlapdServer
    registry: Service
    mq: Service
    registry_url: str
    udp: tuple[str, int]
    mq_url: str
    admin_token: str
    env: dict[str, str]
    agent_token: str = ""
    agents: list[AgentProcess] = field(default_factory=list)
    sites: list[Service] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL of the master queue's database."""
        return self.mariadb.url(self.db_name)

    @contextlib.asynccontextmanager
    async def client(self, token: str) -> AsyncIterator[MasterQueueClient]:
        """A master-queue client holding ``token``."""
        async with MasterQueueClient(self.mq_url, token) as client:
            yield client

    async def token(self, role: str, name: str) -> str:
        """A new token from the admin."""
        async with self.client(self.admin_token) as admin:
            return await admin.create_token(role, name)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def registry_client(self) -> AsyncIterator[RegistryClient]:
        """A registry query client."""
        async with RegistryClient(self.registry_url) as client:
            yield client

    def agent_argv(self, name: str, state_dir: Path, *extra: str) -> list[str]:
        """``podgrid jobagent run`` for this grid's site, CE, slapd and services."""
        return podgrid(
            "jobagent", "run", "--site", SITE, "--ce", CE, "--agent-id", name,
            "--state-dir", str(state_dir), "--config", self.slapd.url,
            "--registry-url", self.registry_url, "--masterqueue-url", self.mq_url,
            "--registry-publish", f"udp://{self.udp[0]}:{self.udp[1]}", *extra,
        )  # fmt: skip

    def start_agent(self, name: str, *extra: str) -> AgentProcess:
        """Start one agent process (its own session) holding the agent token."""
        state_dir = self.tmp / "agents" / name
        state_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "PODGRID_TOKEN": self.agent_token}
        with open(state_dir / "agent.log", "ab") as out:
            proc = subprocess.Popen(
                self.agent_argv(name, state_dir, *extra), env=env, cwd=REPO,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        agent = AgentProcess(name, state_dir, proc)
        self.agents.append(agent)
        return agent

    def start_site(self, name: str, n_agents: int, *extra: str) -> Service:
        """Start a ``podgrid site run`` factory keeping ``n_agents`` local agents alive."""
        state_dir = self.tmp / "sites" / name
        state_dir.mkdir(parents=True, exist_ok=True)
        argv = podgrid(
            "site", "run", "--agents", str(n_agents), "--site", SITE, "--ce", CE,
            "--config", self.slapd.url, "--state-dir", str(state_dir),
            "--registry-url", self.registry_url, "--masterqueue-url", self.mq_url,
            "--registry-publish", f"udp://{self.udp[0]}:{self.udp[1]}", *extra,
        )  # fmt: skip
        env = {**self.env, "PODGRID_TOKEN": self.agent_token}
        site = Service(f"site {name}", argv, env, self.tmp / f"site-{name}.log")
        site.start()
        self.sites.append(site)
        return site

    def registry_metric(self, name: str, **labels: str) -> float:
        """One sample of the registry's ``/metrics`` (0 when absent)."""
        return metric(self.registry_url + "/metrics", name, **labels)

    def mq_metric(self, name: str, **labels: str) -> float:
        """One sample of the master queue's ``/metrics`` (0 when absent)."""
        return metric(self.mq_url + "/metrics", name, **labels)


def metric(url: str, name: str, **labels: str) -> float:
    """The value of the sample ``name{labels}`` at a Prometheus endpoint (0 when absent)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        got = ",".join(sorted(p for p in (m.group(2) or "").split(",") if p))
        if got == want:
            return float(m.group(3))
    return 0.0


def _registry(tmp: Path, env: dict[str, str]) -> tuple[Service, str, tuple[str, int]]:
    http_port, udp_port = free_port(), free_port()
    (tmp / "apmon.password").write_text(APMON_PASSWORD + "\n")
    (tmp / "registry.tokens").write_text(REGISTRY_TOKEN + "\n")
    url = f"http://127.0.0.1:{http_port}"
    argv = podgrid(
        "monitoring", "serve", "--http", f"127.0.0.1:{http_port}", "--udp",
        f"127.0.0.1:{udp_port}", "--state-dir", str(tmp / "registry"),
        "--apmon-password-file", str(tmp / "apmon.password"),
        "--token-file", str(tmp / "registry.tokens"),
    )  # fmt: skip
    service = Service("registry", argv, env, tmp / "registry.log", url + "/healthz")
    return service, url, ("127.0.0.1", udp_port)


@contextlib.asynccontextmanager
async def real_grid(
    tmp: Path,
    mariadb: MariaDB,
    *,
    config: dict[str, Any] | None = None,
    launcher: str = "local",
    **mq: Any,
) -> AsyncIterator[RealGrid]:
    """Start the grid for one test (``config``: pod* attributes of the CE); stop it at exit."""
    db_name = mariadb.create_database("podgrid_integ")
    ldif = ldif_with(tmp / "config.ldif", SITE, CE, **(config or {}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRID_")}
    env["PODGRID_APMON_PASSWORD"] = APMON_PASSWORD
    with start_slapd(ldif) as slapd, _reap_groups() as groups:
        registry, registry_url, udp = _registry(tmp, env)
        mq_port = free_port()
        settings = {
            "http_port": mq_port,
            "state_dir": str(tmp / "mq"),
            "db_url": mariadb.url(db_name),
            "config_source": slapd.url,
            "launcher": launcher,
            "registry_url": f"udp://{udp[0]}:{udp[1]}",
            "apmon_password": APMON_PASSWORD,
            "broker_command": BROKER,
            "stop_brokers_on_exit": True,
            "queue_publish_interval_s": 1.0,
            **mq,
        }
        (tmp / "mq.json").write_text(json.dumps(settings))
        mq_url = f"http://127.0.0.1:{mq_port}"
        master = Service(
            "master queue",
            [sys.executable, "-m", "integration.serve_mq", str(tmp / "mq.json")],
            env,
            tmp / "mq.log",
            mq_url + "/healthz",
        )
        registry.start()
        groups.append(registry)
        master.start()
        groups.append(master)
        admin = (tmp / "mq" / "admin.token").read_text().strip()
        grid = RealGrid(
            tmp, mariadb, db_name, slapd, registry, master, registry_url, udp, mq_url, admin, env
        )
        grid.agent_token = await grid.token("agent", "integ-agents")
        try:
            yield grid
        finally:
            for agent in grid.agents:
                agent.stop(timeout_s=20.0)
            for site in grid.sites:
                site.stop(timeout_s=60.0)
            master.stop()
            registry.stop()
            with contextlib.suppress(RuntimeError):
                mariadb.sql(f"DROP DATABASE IF EXISTS `{db_name}`")


@contextlib.contextmanager
def _reap_groups() -> Iterator[list[Service]]:
    """At exit, SIGKILL whatever is left of the listed services' groups and of this test's
    children (brokers, agents, workers): a failed test must not leave the next one a grid."""
    services: list[Service] = []
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        yield services
    finally:
        for service in services:
            if service.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(service.process.pid, signal.SIGKILL)
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.pid not in before and proc.name() not in SERVERS:
                    proc.kill()


__all__ = [
    "BROKER",
    "CE",
    "CE_DN",
    "PUBLISH_INTERVAL_S",
    "SITE",
    "RealGrid",
    "Service",
    "eventually",
    "log_events",
    "metric",
    "podgrid",
    "real_grid",
]
