"""``podgrid site run --backend slurm`` as a real subprocess against the test Slurm and grid.

:func:`slurm_site` starts the factory with its agents' flags pointing at a running grid
(:mod:`tests.jobagent.grid`) and its ``sbatch``/``squeue`` at the fixture's Slurm; the agents
then run as Slurm jobs on the fixture's nodes. :class:`SiteProcess` reads what a site admin
would look at: the agents' ``agent.json`` and logs, the factory's ``site.json`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.logs import log_events
from tests.harness.ports import free_port
from tests.harness.slurm import SlurmCluster
from tests.jobagent.grid import Grid

SITE, CE = "SlurmSite", "slurm-ce"
STOP_TIMEOUT_S = 90.0


@dataclass
class AgentView:
    """One agent the factory submitted, seen through its private directory."""

    agent_id: str
    state_dir: Path

    def status(self) -> dict[str, Any]:
        """Its ``agent.json`` (empty until written)."""
        try:
            return dict(json.loads((self.state_dir / "agent.json").read_text()))
        except (OSError, ValueError):
            return {}

    @property
    def params(self) -> dict[str, Any]:
        """What it publishes (State, Server, JobId, ...)."""
        return dict(self.status().get("params", {}))

    @property
    def state(self) -> str | None:
        """Its state as last written."""
        return self.params.get("State")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its JSON log events called ``name``."""
        try:
            text = (self.state_dir / "agent.log").read_text(errors="replace")
        except OSError:
            return []
        return log_events(text, name)


@dataclass
class SiteProcess:
    """A running ``podgrid site run --backend slurm``."""

    process: subprocess.Popen[bytes]
    state_dir: Path
    http_url: str
    log_path: Path

    def agents(self) -> list[AgentView]:
        """Every agent submitted so far, in submission order."""
        root = self.state_dir / "agents"
        if not root.exists():
            return []
        return [AgentView(d.name, d) for d in sorted(root.iterdir()) if d.is_dir()]

    def agent(self, agent_id: str) -> AgentView:
        """One agent by id."""
        return AgentView(agent_id, self.state_dir / "agents" / agent_id)

    def in_state(self, state: str, server: int | None = None) -> list[AgentView]:
        """The agents whose last written state is ``state`` (on ``server``, if given)."""
        return [
            a
            for a in self.agents()
            if a.state == state and (server is None or str(a.params.get("Server")) == str(server))
        ]

    def site(self) -> dict[str, Any]:
        """The factory's ``site.json``."""
        try:
            return dict(json.loads((self.state_dir / "site.json").read_text()))
        except (OSError, ValueError):
            return {}

    def metrics(self) -> str:
        """The factory's ``/metrics`` text."""
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of ``/metrics`` (None when absent)."""
        shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = "^" + re.escape(name + (f"{{{shown}}}" if shown else "")) + r" (\S+)$"
        match = re.search(pattern, self.metrics(), re.MULTILINE)
        return float(match.group(1)) if match else None

    def log(self) -> str:
        """The factory's own output."""
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        """The factory's JSON log events called ``name``."""
        return log_events(self.log(), name)

    def jobs(self, cluster: SlurmCluster) -> list[dict[str, str]]:
        """The Slurm jobs this factory submitted (all states, one row per array element)."""
        ids = {str(e["job_id"]) for e in self.events("site.slurm_submitted")}
        return [j for j in cluster.jobs() if j["shown"].split("_")[0] in ids]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the factory (it drains its agents) and wait; SIGKILL after ``timeout_s``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextlib.asynccontextmanager
async def slurm_site(
    grid: Grid,
    cluster: SlurmCluster,
    tmp: Path,
    config: str,
    *extra: str,
    agents: int,
    name: str = "site",
) -> AsyncIterator[SiteProcess]:
    """Run the Slurm factory for ``agents`` agents until the block ends (then stop it)."""
    state_dir = tmp / name
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "podgrid",
        "site",
        "run",
        "--backend",
        "slurm",
        "--agents",
        str(agents),
        "--site",
        SITE,
        "--ce",
        CE,
        "--config",
        config,
        "--registry-url",
        grid.registry_url,
        "--masterqueue-url",
        grid.mq_url,
        "--registry-publish",
        f"udp://{grid.udp[0]}:{grid.udp[1]}",
        "--state-dir",
        str(state_dir),
        "--http",
        f"127.0.0.1:{port}",
        *extra,
    ]
    env = {**cluster.env, "PODGRID_TOKEN": grid.agent_token}
    env.pop("PODGRID_REGISTRY_TOKEN", None)
    log_path = tmp / f"{name}.log"
    with log_path.open("ab") as out:
        proc = await asyncio.to_thread(
            subprocess.Popen,
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    site = SiteProcess(proc, state_dir, f"http://127.0.0.1:{port}", log_path)
    try:
        yield site
    finally:
        await asyncio.to_thread(site.stop)  # the grid serves the agents' last calls meanwhile
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
