"""The embedded local grid behind ``podgrid up`` and ``podgrid demo``.

:func:`run_local_grid` starts the monitoring registry and the master queue (SQLite, ``local``
launcher) *in this process* — one event loop, no extra interpreters on a small machine, and the
admin token and store are at hand — and the site factory (``podgrid site run``) as a
subprocess in its own process group, because agents, Dask workers and batch jobs are real
processes that must be stopped as a tree. It writes ``<state dir>/endpoints.json`` (0600) so a
second terminal finds everything, and on exit shuts down in a fixed order with timeouts:
site (agents retire their workers and batch jobs), cancel active requests and wait for their
brokers, master queue, registry — then kills whatever of its own process tree is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import psutil
import structlog

from podgrid.config import environment
from podgrid.config.hierarchy import default_ldif
from podgrid.config.processes import signal_group, stop_group, wait_group_gone
from podgrid.endpoints import ENDPOINTS_FILE_NAME, LocalGridEndpoints
from podgrid.errors import CallFailed, PodGridError
from podgrid.https import trust_ca_file
from podgrid.localca import LocalTLS, make_local_tls
from podgrid.masterqueue import keys as mq_keys
from podgrid.masterqueue.service import RunningMasterQueue, run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.monitoring.client import RegistryClient
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import DEFAULT_HTTP_PORT, DEFAULT_UDP_PORT, RegistrySettings
from podgrid.protocol import REQUEST_FINAL

log = structlog.get_logger("podgrid.localgrid")

PortMode = Literal["auto", "default"]
Say = Callable[[str], None]

DEFAULT_MQ_PORT: Final = 8886  # the packaged LDIF's podMasterQueueURL port
LOCAL_SITE: Final = "Local"  # the packaged LDIF's example site and CE
LOCAL_CE: Final = "local-ce"
# What the local slots announce, so the packaged example request (examples/) fits them.
LOCAL_PACKAGES: Final = ("ROOT::v6-32",)
AGENTS_UP_TIMEOUT_S: Final = 60.0  # seconds for N agents to publish their first state
SITE_STOP_TIMEOUT_S: Final = 45.0  # agents get 30 s (factory grace) to retire their work
BROKERS_STOP_TIMEOUT_S: Final = 20.0
BROKER_STOP_GRACE_S: Final = 3.0  # a cancelled broker normally leaves by itself within 2 s
AGENT_GRACE_S: Final = 5.0  # a batch job's SIGTERM → SIGKILL grace inside an agent
KILL_WAIT_S: Final = 5.0
WARM_BROKERS: Final = 1  # a broker kept started: a request gets its cluster without a cold start
MB: Final = 1024 * 1024


class LocalGridError(PodGridError, RuntimeError):
    """The local grid could not start (a port, the site, the agents); the message says which."""


@dataclass(frozen=True, slots=True)
class Ports:
    """The ports to bind (0: a free one) and why any default was not used."""

    registry_http: int
    registry_udp: int
    masterqueue: int
    notes: tuple[str, ...] = ()


@dataclass
class LocalGrid:
    """A running local grid: its URLs, tokens and the site process."""

    state_dir: Path
    registry_url: str
    registry_udp: tuple[str, int]
    masterqueue_url: str
    dashboard_url: str
    user_token: str
    admin_token: str
    agent_token: str
    agents: int
    site: str
    config_source: str
    masterqueue: RunningMasterQueue = field(repr=False)
    apmon_password: str = field(default="", repr=False)
    ca_file: Path | None = None  # the local CA of the grid's HTTPS services
    site_process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def endpoints_path(self) -> Path:
        """``<state dir>/endpoints.json``."""
        return self.state_dir / ENDPOINTS_FILE_NAME

    @property
    def registry_publish(self) -> str:
        """The ApMon UDP target agents and brokers publish to."""
        return f"udp://{self.registry_udp[0]}:{self.registry_udp[1]}"

    async def agent_states(self) -> dict[str, str]:
        """agent id → the state it last published (POLLING, WORKER, BATCH, ...)."""
        async with RegistryClient(self.registry_url) as registry:
            rows = await registry.query(f"*/PoD_Agents_{self.site}/*/State")
        return {row.node: str(row.value) for row in rows}

    async def wait_agents(self, timeout_s: float = AGENTS_UP_TIMEOUT_S) -> dict[str, str]:
        """Wait until all agents published a state; LocalGridError if the site died or it took
        longer than ``timeout_s``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        states: dict[str, str] = {}
        while asyncio.get_running_loop().time() < deadline:
            if self.site_process is not None and self.site_process.returncode is not None:
                raise LocalGridError(
                    f"the site exited with code {self.site_process.returncode}; "
                    f"see {self.state_dir / 'site' / 'site.log'}"
                )
            with contextlib.suppress(CallFailed):
                states = await self.agent_states()
            if len(states) >= self.agents:
                return states
            await asyncio.sleep(0.1)
        raise LocalGridError(
            f"only {len(states)} of {self.agents} agents came up within {timeout_s:.0f} s; "
            f"see {self.state_dir / 'site'}"
        )


def _tcp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports(mode: PortMode) -> Ports:
    """``auto``: free ports; ``default``: the LDIF's ports (8885, 8884/udp, 8886) where free."""
    if mode == "auto":
        return Ports(0, 0, 0)
    wanted = [
        ("registry HTTP", DEFAULT_HTTP_PORT, _tcp_free),
        ("registry ApMon UDP", DEFAULT_UDP_PORT, _udp_free),
        ("master queue", DEFAULT_MQ_PORT, _tcp_free),
    ]
    chosen: list[int] = []
    notes: list[str] = []
    for what, port, is_free in wanted:
        if is_free(port):
            chosen.append(port)
        else:
            chosen.append(0)
            notes.append(f"{what} port {port} is taken: using a free port")
    return Ports(chosen[0], chosen[1], chosen[2], tuple(notes))


def site_command(grid: LocalGrid, memory_mb: int) -> list[str]:
    """``podgrid site run`` for the local site, with every URL passed explicitly."""
    return [
        sys.executable, "-m", "podgrid", "site", "run", "--agents", str(grid.agents),
        "--backend", "local", "--site", grid.site, "--ce", LOCAL_CE,
        "--config", grid.config_source, "--registry-url", grid.registry_url,
        "--masterqueue-url", grid.masterqueue_url, "--registry-publish", grid.registry_publish,
        "--cores", "1", "--memory", str(memory_mb), "--grace", str(AGENT_GRACE_S),
        "--state-dir", str(grid.state_dir / "site"),
    ]  # fmt: skip


def slot_memory_mb(agents: int) -> int:
    """Each local slot's share of this machine's memory (MB)."""
    return max(256, psutil.virtual_memory().total // MB // max(agents, 1))


async def _start_site(grid: LocalGrid) -> asyncio.subprocess.Process:
    site_dir = grid.state_dir / "site"
    site_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        environment.TOKEN: grid.agent_token,
        environment.SLOT_PACKAGES: ",".join(LOCAL_PACKAGES),
        environment.APMON_PASSWORD: grid.apmon_password,
    }
    if grid.ca_file is not None:
        env[environment.CA_FILE] = str(grid.ca_file)
    for name in (environment.URL, environment.REGISTRY_TOKEN, environment.REGISTRY_URL):
        env.pop(name, None)
    out = os.open(site_dir / "site.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return await asyncio.create_subprocess_exec(
            *site_command(grid, slot_memory_mb(grid.agents)), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(out)


def _descendants(pid: int) -> list[psutil.Process]:
    """Every process below ``pid``: agents and their workers lead sessions of their own."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _live_groups(procs: list[psutil.Process]) -> tuple[int, set[int]]:
    """How many of ``procs`` still run, and their process groups (ours excluded)."""
    alive = 0
    groups: set[int] = set()
    for p in procs:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive += 1
                groups.add(os.getpgid(p.pid))
    groups.discard(os.getpgrp())
    return alive, groups


async def stop_site(proc: asyncio.subprocess.Process, timeout_s: float) -> int | None:
    """SIGTERM the site's group (it stops its agents, they stop workers and jobs); SIGKILL it
    after ``timeout_s``, then every group of its tree still left; the site's exit code (None
    if it had to be killed)."""
    tree = await asyncio.to_thread(_descendants, proc.pid)
    code = await stop_group(proc, timeout_s, killed_event="localgrid.site_killed")
    left, groups = await asyncio.to_thread(_live_groups, tree)
    if left:
        log.warning("localgrid.site_leftovers_killed", count=left)
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
        await asyncio.gather(*(wait_group_gone(pgid, KILL_WAIT_S) for pgid in groups))
    return None if code == -signal.SIGKILL else code


async def cancel_active(mq: RunningMasterQueue, timeout_s: float) -> list[int]:
    """Cancel every active request and wait for the brokers this process started to exit."""
    store = mq.store
    active = [r for r in await store.list_requests(limit=1000) if r.state not in REQUEST_FINAL]
    for record in active:
        with contextlib.suppress(Exception):  # it may have finished meanwhile
            await store.cancel_request(record.id, owner=None)
    # No wake_launcher.set() here: on Python 3.11 a wake racing the master queue's shutdown
    # can swallow the launcher task's cancellation (asyncio.wait_for); its 0.2 s tick is enough.
    launch = mq.app.get(mq_keys.LAUNCH_LOOP)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while launch is not None and launch.handles:
        if asyncio.get_running_loop().time() > deadline:
            log.warning("localgrid.brokers_still_running", requests=sorted(launch.handles))
            break  # the master queue's exit stops them (stop_brokers_on_exit)
        await asyncio.sleep(0.1)
    return [r.id for r in active]


def _mq_settings(
    state_dir: Path, port: int, config: str, udp: str, apmon_password: str, tls: LocalTLS
) -> MasterQueueSettings:
    broker = [sys.executable, "-m", "podgrid", "broker", "serve", "--registry", udp,
              "--config", config, "--state-dir", str(state_dir)]  # fmt: skip
    return MasterQueueSettings.model_validate(
        {"http_port": port, "state_dir": state_dir, "config_source": config,
         "registry_url": udp, "launcher": "local", "broker_command": broker,
         "broker_stop_grace_s": BROKER_STOP_GRACE_S, "stop_brokers_on_exit": True,
         "sweep_interval_s": 1.0, "launcher_interval_s": 0.2, "apmon_password": apmon_password,
         "warm_brokers": WARM_BROKERS,
         "tls_cert": tls.services["masterqueue"].cert, "tls_key": tls.services["masterqueue"].key,
         "ca_file": tls.ca_file}
    )  # fmt: skip


async def _tokens(mq: RunningMasterQueue, settings: MasterQueueSettings) -> tuple[str, str, str]:
    """(admin, user, agent) tokens; a reused state dir keeps its admin token in admin.token."""
    admin = mq.admin_token
    if admin is None:
        try:
            admin = settings.admin_token_path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise LocalGridError(
                f"{settings.state_dir} holds a master-queue database but no readable "
                f"admin.token ({e}); use another --state-dir"
            ) from e
    user = await mq.store.create_token("user", getpass.getuser())
    agent = await mq.store.create_token("agent", f"site-{LOCAL_SITE}")
    return admin, user, agent


@contextlib.asynccontextmanager
async def run_local_grid(
    state_dir: Path,
    *,
    agents: int = 4,
    config: str | None = None,
    ports: PortMode = "auto",
    say: Say = lambda _: None,
) -> AsyncIterator[LocalGrid]:
    """Registry, master queue and a local site with ``agents`` agents, until the block exits.

    ``config``: an LDIF path or ``ldap://`` URL (default: the packaged LDIF). ``say`` gets
    the progress lines. LocalGridError when a part cannot start.
    """
    state_dir = await asyncio.to_thread(state_dir.resolve)
    state_dir.mkdir(parents=True, exist_ok=True)
    source = config or default_ldif()
    chosen = choose_ports(ports)
    for note in chosen.notes:
        say(note)
    # No datagram without this password reaches the registry (anyone on the host can send one).
    apmon_password = secrets.token_urlsafe(32)
    # HTTPS everywhere, from a CA made for this run (its key is never stored).
    tls = make_local_tls(state_dir / "tls", ["registry", "masterqueue"])
    trust_ca_file(tls.ca_file)
    reg_settings = RegistrySettings.model_validate(
        {"http_port": chosen.registry_http, "udp_port": chosen.registry_udp,
         "state_dir": state_dir / "registry", "apmon_password": apmon_password,
         "tls_cert": tls.services["registry"].cert, "tls_key": tls.services["registry"].key}
    )  # fmt: skip
    async with run_registry(reg_settings) as reg:
        udp = f"udp://{reg.udp_addr[0]}:{reg.udp_addr[1]}"
        say(f"registry on {reg.http_url} (ApMon {udp})")
        mq_settings = _mq_settings(state_dir, chosen.masterqueue, source, udp, apmon_password, tls)
        async with run_masterqueue(mq_settings) as mq:
            say(f"master queue on {mq.url} (SQLite in {state_dir})")
            admin, user, agent = await _tokens(mq, mq_settings)
            grid = LocalGrid(
                state_dir=state_dir, registry_url=reg.http_url, registry_udp=reg.udp_addr,
                masterqueue_url=mq.url, dashboard_url=f"{reg.http_url}/", user_token=user,
                admin_token=admin, agent_token=agent, agents=agents, site=LOCAL_SITE,
                config_source=source, masterqueue=mq, apmon_password=apmon_password,
                ca_file=tls.ca_file,
            )  # fmt: skip
            LocalGridEndpoints(
                masterqueue_url=mq.url, registry_url=reg.http_url,
                dashboard_url=grid.dashboard_url, user_token=user, admin_token=admin,
                ca_file=str(tls.ca_file),
            ).write(grid.endpoints_path)  # fmt: skip
            try:
                grid.site_process = await _start_site(grid)
                await grid.wait_agents()
                say(f"site {grid.site}: {agents} agent{'' if agents == 1 else 's'} polling")
                say(f"dashboard: {grid.dashboard_url}")
                yield grid
            finally:
                await _shutdown(grid)
        log.info("localgrid.masterqueue_stopped")


async def _shutdown(grid: LocalGrid) -> None:
    """Site first, then the clusters; the caller's context managers close MQ and registry."""
    if grid.site_process is not None:
        code = await stop_site(grid.site_process, SITE_STOP_TIMEOUT_S)
        log.info("localgrid.site_stopped", exit_code=code)
    cancelled = await cancel_active(grid.masterqueue, BROKERS_STOP_TIMEOUT_S)
    log.info("localgrid.requests_cancelled", requests=cancelled)
    with contextlib.suppress(FileNotFoundError):
        grid.endpoints_path.unlink()


__all__ = [
    "LocalGrid",
    "LocalGridError",
    "PortMode",
    "Ports",
    "choose_ports",
    "run_local_grid",
]
