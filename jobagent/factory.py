"""The site pilot factory: keep N agents alive on a site (AliEn's CE loop).

Agents that exit (slot TTL, ``exit`` fallback, crash) are replaced, at most
``max_restarts_per_min`` times in any 60 s, so a broken agent cannot turn into a fork storm.
Agents are started through a small, batch-system-neutral :class:`Backend` (submit / poll /
cancel, plus ``submit_many`` and ``is_queued`` for batch queues); :class:`LocalBackend` runs
them as local subprocesses, :mod:`podgrid.jobagent.slurm` as Slurm jobs. In front of a batch
queue the factory also keeps at most ``max_queued`` agents waiting, submits at most once per
``submit_interval_s`` (several agents go in one submission, a job array on Slurm), and backs
off exponentially while the batch system refuses submissions (counted, never a busy loop).
The factory sums its agents' slot accounting and counts what it sees on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import structlog
from prometheus_client import Counter, Gauge

from podgrid.config.processes import exit_status, stop_group
from podgrid.config.runtime import wait_event
from podgrid.jobagent.status import ACTIVITIES, AGENT_FILE

log = structlog.get_logger("podgrid.site")

RESTART_WINDOW_S: Final = 60.0
SITE_FILE: Final = "site.json"
DEFAULT_BACKOFF_S: Final = 1.0  # seconds after a first refused submission; doubles each time
DEFAULT_MAX_BACKOFF_S: Final = 60.0  # seconds, longest pause between two refused submissions
SITE_SECONDS = Gauge(
    "podgrid_site_agent_seconds",
    "Slot seconds of this factory's agents (live and finished), by activity.",
    ["activity"],
)
SITE_AGENTS = Gauge(
    "podgrid_site_agents",
    "This factory's agents by state (queued: waiting in the batch queue).",
    ["state"],
)
SITE_SUBMITTED = Counter(
    "podgrid_site_agents_submitted_total", "Agents this factory submitted (or started)."
)
SITE_FAILED = Counter(
    "podgrid_site_agents_failed_total", "Agents that ended with a non-zero exit code."
)
SITE_REFUSED = Counter(
    "podgrid_site_submit_refused_total", "Submissions the batch system refused (then backed off)."
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

    async def submit_many(self, specs: Sequence[AgentSpec]) -> list[str]:
        """Start several agents at once (one submission where the batch system has them)."""
        ...

    def is_queued(self, handle: str) -> bool:
        """Whether the agent still waits in the batch queue (not yet on a slot)."""
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

    async def submit_many(self, specs: Sequence[AgentSpec]) -> list[str]:
        """One process per spec."""
        return [await self.submit(spec) for spec in specs]

    def is_queued(self, handle: str) -> bool:
        """Never: a local agent starts at once."""
        return False

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
        max_queued: int | None = None,
        submit_interval_s: float = 0.0,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    ) -> None:
        self.backend = backend
        self.agents = agents
        self.make_spec = make_spec
        self.state_dir = state_dir
        self.max_restarts_per_min = max_restarts_per_min
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.max_queued = max_queued
        self.submit_interval_s = submit_interval_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.running: list[Running] = []
        self.started_dirs: list[Path] = []
        self.exits: list[tuple[str, int]] = []
        self.throttled = 0
        self.submitted = 0
        self.failed = 0
        self.refused = 0
        self._restarts: collections.deque[float] = collections.deque()
        self._serial = 0
        self._retry: list[AgentSpec] = []  # refused specs, tried again first (same ids)
        self._refusals_in_row = 0
        self._backoff_until = -math.inf
        self._last_submit = -math.inf

    @property
    def queued(self) -> int:
        """Agents still waiting in the batch queue."""
        return sum(1 for a in self.running if self.backend.is_queued(a.handle))

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        return len(self._restarts) < self.max_restarts_per_min

    async def _reap(self) -> None:
        for agent in list(self.running):
            code = await self.backend.poll(agent.handle)
            if code is None:
                continue
            self.running.remove(agent)
            self.exits.append((agent.spec.agent_id, code))
            if code != 0:
                self.failed += 1
                SITE_FAILED.inc()
            log.info(
                "site.agent_exited",
                agent_id=agent.spec.agent_id,
                exit_code=code,
                lived_s=round(time.monotonic() - agent.started, 2),
            )

    def _room(self) -> int:
        """How many agents may be submitted now: the gap, less what the queue limit forbids."""
        now = time.monotonic()
        if now < self._backoff_until or now - self._last_submit < self.submit_interval_s:
            return 0
        room = self.agents - len(self.running)
        if self.max_queued is not None:
            room = min(room, self.max_queued - self.queued)
        return max(0, room)

    def _specs(self, room: int) -> list[AgentSpec]:
        """Refused specs first, then new ones within the restart budget (the first N are free)."""
        specs = self._retry[:room]
        while len(specs) < room:
            if self._serial >= self.agents:
                if not self._may_restart():
                    self.throttled += 1
                    log.warning("site.restart_budget_exhausted", per_min=self.max_restarts_per_min)
                    break
                self._restarts.append(time.monotonic())
            self._serial += 1
            specs.append(self.make_spec(self._serial))
        return specs

    async def _submit(self, specs: list[AgentSpec]) -> None:
        self._last_submit = time.monotonic()
        try:
            handles = await self.backend.submit_many(specs)
        except OSError as e:
            self._retry = specs
            self.refused += 1
            SITE_REFUSED.inc()
            self._refusals_in_row += 1
            pause = min(self.max_backoff_s, self.backoff_s * 2 ** (self._refusals_in_row - 1))
            self._backoff_until = time.monotonic() + pause
            log.warning(
                "site.submit_refused", agents=len(specs), error=str(e), pause_s=round(pause, 2)
            )
            return
        self._retry = []
        self._refusals_in_row = 0
        for spec, handle in zip(specs, handles, strict=True):
            self.running.append(Running(spec, handle))
            self.started_dirs.append(spec.state_dir)
            log.info("site.agent_started", agent_id=spec.agent_id, handle=handle)
        self.submitted += len(specs)
        SITE_SUBMITTED.inc(len(specs))

    async def tick(self) -> None:
        """Reap exited agents and submit replacements within the budgets and limits."""
        await self._reap()
        specs = self._specs(self._room())
        if specs:
            await self._submit(specs)
        queued = self.queued
        SITE_AGENTS.labels(state="queued").set(queued)
        SITE_AGENTS.labels(state="running").set(len(self.running) - queued)
        self.publish_accounting()

    def publish_accounting(self) -> dict[str, float]:
        """Sum the agents' slot seconds into the gauge and ``<state dir>/site.json``."""
        totals = read_accounting(self.started_dirs)
        for activity, value in totals.items():
            SITE_SECONDS.labels(activity=activity).set(value)
        doc = {
            "agents": self.agents,
            "running": len(self.running),
            "queued": self.queued,
            "started": self._serial,
            "submitted": self.submitted,
            "failed": self.failed,
            "refused": self.refused,
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
