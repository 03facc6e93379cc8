"""Where the agent's slot time goes: its state, the seconds per activity, and their publication.

States (DESIGN.md): POLLING, ATTACHING, WORKER, BATCH, EXITING. Time is booked to one of four
activities (polling, worker, batch, idle) and exposed as ``podgrid_jobagent_seconds_total``;
the status is published to the registry (cluster ``PoD_Agents_<site>``, node = agent id) by a
background task that always sends the newest status, so a slow registry never holds the agent
up, and written to ``<state dir>/agent.json`` for the site factory to sum.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from prometheus_client import Counter, Gauge

from podgrid.config.runtime import wait_event
from podgrid.errors import CallFailed
from podgrid.monitoring.client import Publisher
from podgrid.protocol import AgentParam, agents_cluster

log = structlog.get_logger("podgrid.jobagent")

Activity = Literal["polling", "worker", "batch", "idle"]
ACTIVITIES: Final[tuple[Activity, ...]] = ("polling", "worker", "batch", "idle")
AGENT_FILE: Final = "agent.json"

SECONDS = Counter(
    "podgrid_jobagent_seconds",  # exposed as podgrid_jobagent_seconds_total
    "Slot seconds spent by this agent, by activity.",
    ["activity"],
)
STATE = Gauge("podgrid_jobagent_state", "1 for the agent's current state.", ["state"])


class AgentState(StrEnum):
    """The agent's states, as published in the registry."""

    POLLING = "POLLING"
    ATTACHING = "ATTACHING"
    WORKER = "WORKER"
    BATCH = "BATCH"
    EXITING = "EXITING"


class Accounting:
    """Books wall-clock seconds to the current activity."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds: dict[Activity, float] = dict.fromkeys(ACTIVITIES, 0.0)
        self.activity: Activity = "idle"
        self._since = clock()

    def switch(self, activity: Activity) -> None:
        """Close the running interval and start booking to ``activity``."""
        self.flush()
        self.activity = activity

    def flush(self) -> None:
        """Book the running interval so far (counters stay current during long phases)."""
        now = self._clock()
        spent = max(0.0, now - self._since)
        self._since = now
        self.seconds[self.activity] += spent
        SECONDS.labels(activity=self.activity).inc(spent)

    def snapshot(self) -> dict[Activity, float]:
        """Seconds per activity, the running interval included."""
        self.flush()
        return dict(self.seconds)


class StatusReporter:
    """Keeps the newest status and sends it: at every change and every ``interval_s``."""

    def __init__(
        self,
        publisher: Publisher | None,
        *,
        site: str,
        agent_id: str,
        state_dir: Path,
        accounting: Accounting,
        remaining_s: Callable[[], float],
        interval_s: Callable[[], float],
    ) -> None:
        self.publisher = publisher
        self.cluster = agents_cluster(site)
        self.agent_id = agent_id
        self.state_dir = state_dir
        self.accounting = accounting
        self._remaining_s = remaining_s
        self._interval_s = interval_s
        self.fields: dict[str, Any] = {
            AgentParam.STATE: AgentState.POLLING.value,
            AgentParam.SERVER: "",
            AgentParam.JOB_ID: 0,
        }
        self.extra: dict[str, Any] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.sent = 0

    def update(self, **fields: Any) -> None:
        """Change status fields (State, Server, JobId) and publish soon."""
        self.fields.update(fields)
        for state in AgentState:
            current = self.fields[AgentParam.STATE] == state.value
            STATE.labels(state=state.value).set(1 if current else 0)
        self._changed.set()

    def params(self) -> dict[str, str | int | float]:
        """The parameter set published for this agent."""
        seconds = self.accounting.snapshot()
        params: dict[str, str | int | float] = {
            **self.fields,
            AgentParam.REMAINING_TTL: int(self._remaining_s()),
        }
        for activity, value in seconds.items():
            params[f"Seconds{activity.capitalize()}"] = round(value, 3)
        return params

    def start(self) -> None:
        """Start the background publication loop."""
        self._task = asyncio.create_task(self._run(), name="jobagent-status")

    async def stop(self) -> None:
        """Send the final status once, then stop the loop."""
        self._closing = True
        self._changed.set()
        if self._task is not None:
            await self._task
        await self.send_now()

    async def _run(self) -> None:
        while not self._closing:
            await wait_event(self._changed, self._interval_s())
            self._changed.clear()
            if not self._closing:
                await self.send_now()

    async def send_now(self) -> None:
        """Publish and write the status file now (failures are logged, never raised)."""
        params = self.params()
        self.write_file(params)
        if self.publisher is None:
            return
        try:
            await self.publisher.send(self.cluster, self.agent_id, params)
            self.sent += 1
        except CallFailed as e:
            log.warning("jobagent.status_publish_failed", error=str(e))

    def write_file(self, params: dict[str, str | int | float]) -> None:
        """``<state dir>/agent.json``: the status plus whatever :attr:`extra` holds."""
        doc = {
            "agent_id": self.agent_id,
            "pid": os.getpid(),
            "updated": time.time(),
            "params": params,
            **self.extra,
        }
        path = self.state_dir / AGENT_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)
