"""The site pilot factory: keep N agents alive on a site (AliEn's CE loop).

Agents that exit (slot TTL, ``exit`` fallback, crash) are replaced, at most
``max_restarts_per_min`` times in any 60 s, so a broken agent cannot turn into a fork storm.
Agents are started through a small, batch-system-neutral :class:`Backend` (submit / poll /
cancel); :class:`LocalBackend` runs them as local subprocesses, a Slurm backend would
``sbatch`` / ``squeue`` / ``scancel``. The factory sums its agents' slot accounting.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import structlog
from prometheus_client import Gauge

from podgrid.config.processes import exit_status, stop_group
from podgrid.config.runtime import wait_event
from podgrid.jobagent.status import ACTIVITIES, AGENT_FILE

log = structlog.get_logger("podgrid.site")

RESTART_WINDOW_S: Final = 60.0
SITE_FILE: Final = "site.json"
SITE_SECONDS = Gauge(
    "podgrid_site_agent_seconds",
    "Slot seconds of this factory's agents (live and finished), by activity.",
    ["activity"],
)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent to start: its id, command line, environment and private directory."""

    agent_id: str
    argv: Sequence[str]
    env: Mapping[str, str]
    state_dir: Path


class Backend(Protocol):
    """Where agents run: small enough that a batch system fits behind it."""

    async def submit(self, spec: AgentSpec) -> str:
        """Start an agent; a handle for :meth:`poll` and :meth:`cancel`."""
        ...

    async def poll(self, handle: str) -> int | None:
        """The agent's exit code, or None while it runs (or waits in a queue)."""
        ...

    async def cancel(self, handle: str, grace_s: float) -> None:
        """Stop the agent (SIGTERM, SIGKILL after ``grace_s``) and wait for it."""
        ...


class LocalBackend:
    """Agents as subprocesses of the factory, each in its own process group."""

    def __init__(self) -> None:
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    async def submit(self, spec: AgentSpec) -> str:
        """Start ``spec.argv`` with output to ``<state dir>/agent.log``."""
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        out = os.open(spec.state_dir / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=dict(spec.env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(out)
        handle = f"local:{proc.pid}"
        self._procs[handle] = proc
        return handle

    async def poll(self, handle: str) -> int | None:
        """Exit code (shell convention for signals) or None."""
        proc = self._procs[handle]
        if proc.returncode is None:
            return None
        del self._procs[handle]
        return exit_status(proc.returncode)

    async def cancel(self, handle: str, grace_s: float) -> None:
        """SIGTERM the agent's group, SIGKILL what is left after ``grace_s``."""
        proc = self._procs.get(handle)
        if proc is None:
            return
        await stop_group(proc, grace_s, killed_event="site.agent_killed", handle=handle)


@dataclass
class Running:
    """One agent the factory keeps."""

    spec: AgentSpec
    handle: str
    started: float = field(default_factory=time.monotonic)


def agent_command(python: str = sys.executable) -> list[str]:
    """``python -m podgrid jobagent run`` with this interpreter."""
    return [python, "-m", "podgrid", "jobagent", "run"]


def read_accounting(state_dirs: Sequence[Path]) -> dict[str, float]:
    """Seconds per activity summed over the agents' ``agent.json`` files."""
    totals: dict[str, float] = dict.fromkeys(ACTIVITIES, 0.0)
    for d in state_dirs:
        try:
            params = json.loads((d / AGENT_FILE).read_text())["params"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for activity in ACTIVITIES:
            value = params.get(f"Seconds{activity.capitalize()}", 0)
            totals[activity] += float(value) if isinstance(value, int | float) else 0.0
    return totals


class SiteFactory:
    """Keeps ``agents`` agents alive through ``backend``."""

    def __init__(
        self,
        backend: Backend,
        *,
        agents: int,
        make_spec: Callable[[int], AgentSpec],
        state_dir: Path,
        max_restarts_per_min: int = 10,
        poll_s: float = 0.5,
        grace_s: float = 30.0,
    ) -> None:
        self.backend = backend
        self.agents = agents
        self.make_spec = make_spec
        self.state_dir = state_dir
        self.max_restarts_per_min = max_restarts_per_min
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.running: list[Running] = []
        self.started_dirs: list[Path] = []
        self.exits: list[tuple[str, int]] = []
        self.throttled = 0
        self._restarts: collections.deque[float] = collections.deque()
        self._serial = 0

    async def _start_one(self) -> None:
        self._serial += 1
        spec = self.make_spec(self._serial)
        handle = await self.backend.submit(spec)
        self.running.append(Running(spec, handle))
        self.started_dirs.append(spec.state_dir)
        log.info("site.agent_started", agent_id=spec.agent_id, handle=handle)

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        return len(self._restarts) < self.max_restarts_per_min

    async def tick(self) -> None:
        """Reap exited agents and start replacements within the restart budget."""
        for agent in list(self.running):
            code = await self.backend.poll(agent.handle)
            if code is not None:
                self.running.remove(agent)
                self.exits.append((agent.spec.agent_id, code))
                log.info(
                    "site.agent_exited",
                    agent_id=agent.spec.agent_id,
                    exit_code=code,
                    lived_s=round(time.monotonic() - agent.started, 2),
                )
        initial = self._serial == 0
        while len(self.running) < self.agents:
            if not initial:
                if not self._may_restart():
                    self.throttled += 1
                    log.warning("site.restart_budget_exhausted", per_min=self.max_restarts_per_min)
                    break
                self._restarts.append(time.monotonic())
            await self._start_one()
        self.publish_accounting()

    def publish_accounting(self) -> dict[str, float]:
        """Sum the agents' slot seconds into the gauge and ``<state dir>/site.json``."""
        totals = read_accounting(self.started_dirs)
        for activity, value in totals.items():
            SITE_SECONDS.labels(activity=activity).set(value)
        doc = {
            "agents": self.agents,
            "running": len(self.running),
            "started": self._serial,
            "exits": self.exits,
            "throttled": self.throttled,
            "seconds": totals,
        }
        tmp = self.state_dir / (SITE_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.state_dir / SITE_FILE)
        return totals

    async def run(self, stopping: asyncio.Event) -> dict[str, float]:
        """Keep the agents alive until ``stopping``; then stop them all; the site's seconds."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            while not stopping.is_set():
                await self.tick()
                await wait_event(stopping, self.poll_s)
        finally:
            await asyncio.gather(
                *(self.backend.cancel(a.handle, self.grace_s) for a in self.running)
            )
            self.running.clear()
        return self.publish_accounting()
