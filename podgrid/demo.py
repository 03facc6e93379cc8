"""``podgrid demo``: a whole grid on this machine, one cluster's life, and its timeline.

Starts the local grid with a fast-polling configuration, submits a small request, follows its
workers attaching, runs the dimuon analysis on real CMS data on the cluster with a plain
``distributed.Client`` (the cluster's TLS credentials; :mod:`podgrid.demo_analysis`), has the
agents that did not attach run two batch jobs, cancels the request, watches its agents go back
to polling, shuts everything down and prints the timeline with the headline figure
"submit → READY".
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from podgrid.client import PodGrid
from podgrid.config.hierarchy import default_ldif
from podgrid.errors import PodGridError
from podgrid.localgrid import LocalGrid, run_local_grid
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import RequestDetail, RequestState
from podgrid.rootfiles import SAMPLE_UNIT, Source, sample_sources

if TYPE_CHECKING:
    from podgrid.demo_analysis import Analysis

Say = Callable[[str], None]

# The demo's configuration: agents poll every second, fall back to batch after 3 s.
DEMO_CONFIG: Final = {"podPollInterval": 1, "podPollDuration": 3, "podPublishInterval": 1}
READY_TIMEOUT_S: Final = 40.0
JOBS_TIMEOUT_S: Final = 40.0
AGENTS_BACK_TIMEOUT_S: Final = 20.0
ANALYSIS_TIMEOUT_S: Final = 60.0  # each version; its tasks are pinned to workers that may leave
POLL_S: Final = 0.1
JOB_COMMAND: Final = (sys.executable, "-c", "import time; time.sleep(1); print('batch job ok')")
FREE_STATES: Final = ("POLLING", "BATCH")


class DemoFailed(PodGridError, RuntimeError):
    """A step of the demo did not happen in time; the message says which."""


@dataclass
class Timeline:
    """Named moments, in seconds since the request was submitted."""

    started_at: float = field(default_factory=time.time)  # epoch seconds of t+0
    events: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, name: str, at_epoch_s: float | None = None) -> float:
        """Record ``name`` at ``at_epoch_s`` (default: now); its offset in seconds."""
        offset = (time.time() if at_epoch_s is None else at_epoch_s) - self.started_at
        self.events.append((name, offset))
        return offset

    def lines(self) -> list[str]:
        """``t+X.XXs  name`` for every moment, in time order."""
        return [f"t+{t:6.2f}s  {name}" for name, t in sorted(self.events, key=lambda e: e[1])]

    def as_dict(self) -> dict[str, float]:
        """name → seconds since submit (rounded to ms)."""
        return {name: round(t, 3) for name, t in self.events}


@dataclass(frozen=True)
class DemoData:
    """What the demo's analysis reads: checked sources, and the branch's unit for display."""

    sources: Sequence[Source]
    unit: str = ""

    @classmethod
    def sample(cls) -> DemoData:
        """The packaged CMS Z→μμ events' dimuon mass (GeV)."""
        return cls(sample_sources(), SAMPLE_UNIT)


@dataclass
class DemoResult:
    """What the demo found (printed as text, or as JSON with ``--json``)."""

    request_id: int = 0
    submit_to_ready_s: float | None = None
    analysis: Analysis | None = None
    worker_agents: list[str] = field(default_factory=list)
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    wall_s: float = 0.0


def demo_request(workers: int) -> str:
    """The sample request: ``workers`` small workers, READY at all of them, short waits."""
    return (
        "[server]\n"
        'name = "demo-dimuon"\n'
        f"min_workers = {workers}\nmax_workers = {workers}\n"
        'max_wait = "1m"\nttl = "10m"\nidle_timeout = "5m"\n'
        "[worker]\ncores = 1\n"
        'memory = "512MiB"\n'
    )


def write_demo_config(path: Path) -> str:
    """The packaged LDIF with the demo's fast polling at every level; its path."""
    text = Path(default_ldif()).read_text(encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    for attr, value in DEMO_CONFIG.items():
        text = re.sub(rf"^{attr}: .*$", f"{attr}: {value}", text, flags=re.MULTILINE)
    path.write_text(text, encoding="utf-8")
    return str(path)


async def _wait_ready(grid: PodGrid, request_id: int, say: Say) -> RequestDetail:
    shown: list[tuple[str, int]] = []

    def progress(detail: RequestDetail) -> None:
        now = (detail.state.value, detail.worker_count)
        if not shown or shown[-1] != now:
            shown.append(now)
            want = detail.request.min_workers
            bar = "#" * detail.worker_count + "." * max(0, want - detail.worker_count)
            say(f"  [{bar}] {detail.worker_count}/{want} workers attached ({now[0]})")

    return await grid.wait_ready(
        request_id, progress=progress, timeout_s=READY_TIMEOUT_S, poll_interval_s=POLL_S
    )


def _mark_server_events(result: DemoResult, detail: RequestDetail) -> None:
    for event in detail.timeline:
        if event.state in (RequestState.STARTING, RequestState.PUBLISHING, RequestState.READY):
            offset = result.timeline.mark(event.state.value, event.at.timestamp())
            if event.state == RequestState.READY and result.submit_to_ready_s is None:
                result.submit_to_ready_s = offset
    if detail.workers:
        first = min(w.attached_at.timestamp() for w in detail.workers)
        result.timeline.mark("first worker attached", first)


async def _analyse(
    grid: PodGrid, result: DemoResult, data: DemoData, agents: dict[str, str], say: Say
) -> None:
    """Histogram the data on the cluster, both ways; ``agents``: worker name → agent id."""
    from distributed import Client  # a 0.5 s import: only here

    from podgrid.demo_analysis import analyse, by_collections, summary_lines

    info = await grid.connection(result.request_id)
    say(f"connecting a distributed.Client to {info.address} (TLS: {info.uses_tls})")
    client_cm = Client(info.address, security=info.security(), asynchronous=True)  # type: ignore[no-untyped-call]
    async with client_cm as client:
        try:
            async with asyncio.timeout(ANALYSIS_TIMEOUT_S):
                analysis = await analyse(client, data.sources, unit=data.unit)
            result.timeline.mark("analysis done")
            chunks = sum(len(c) for c in analysis.chunks_by_worker.values())
            async with asyncio.timeout(ANALYSIS_TIMEOUT_S):
                analysis.collections = await by_collections(client, data.sources, chunks)
            result.timeline.mark("dask collections done")
        except TimeoutError as e:
            raise DemoFailed(f"the analysis took over {ANALYSIS_TIMEOUT_S:.0f} s") from e
    result.analysis = analysis
    for line in summary_lines(analysis, agents):
        say(line)


async def _run_jobs(grid: PodGrid, job_ids: list[int], result: DemoResult, say: Say) -> None:
    deadline = time.monotonic() + JOBS_TIMEOUT_S
    while True:
        jobs = [await grid.job(j) for j in job_ids]
        if all(j.state.value in ("DONE", "ERROR_E", "EXPIRED", "KILLED") for j in jobs):
            break
        if time.monotonic() > deadline:
            states = {j.id: j.state.value for j in jobs}
            raise DemoFailed(f"batch jobs not finished after {JOBS_TIMEOUT_S:.0f} s: {states}")
        await asyncio.sleep(POLL_S)
    result.timeline.mark("batch jobs done")
    for job in jobs:
        attached = job.agent_id in result.worker_agents
        result.jobs[job.id] = {"state": job.state.value, "agent": job.agent_id}
        say(f"batch job {job.id}: {job.state.value} on agent {job.agent_id}"
            f"{' (a worker agent!)' if attached else ' (did not attach)'}")  # fmt: skip
    if any(j.state.value != "DONE" for j in jobs):
        raise DemoFailed(f"batch jobs did not all end DONE: {result.jobs}")


async def _cancel(local: LocalGrid, grid: PodGrid, result: DemoResult, say: Say) -> None:
    await grid.cancel(result.request_id)
    detail = await grid.request(result.request_id)
    for event in detail.timeline:
        if event.state == RequestState.CANCELLED:
            result.timeline.mark("CANCELLED", event.at.timestamp())
    say(f"request {result.request_id} cancelled; waiting for its agents to go back")
    deadline = time.monotonic() + AGENTS_BACK_TIMEOUT_S
    while True:
        states = await local.agent_states()
        mine = {a: states.get(a, "?") for a in result.worker_agents}
        if all(s in FREE_STATES for s in mine.values()):
            break
        if time.monotonic() > deadline:
            raise DemoFailed(f"agents not back after {AGENTS_BACK_TIMEOUT_S:.0f} s: {mine}")
        await asyncio.sleep(POLL_S)
    result.timeline.mark("worker agents back to polling")
    for agent, state in sorted(mine.items()):
        say(f"  agent {agent}: WORKER -> {state}")


async def _one_cluster(
    local: LocalGrid, workers: int, data: DemoData, result: DemoResult, say: Say
) -> None:
    client = MasterQueueClient(local.masterqueue_url, local.user_token)
    async with PodGrid(client) as grid:
        result.timeline = Timeline()
        record = await grid.submit_text(demo_request(workers), "toml")
        result.request_id = record.id
        result.timeline.mark("submitted")
        say(f"request {record.id} submitted: {workers} workers of 1 core, 512 MiB")
        ready = await _wait_ready(grid, record.id, say)
        _mark_server_events(result, ready)
        result.worker_agents = sorted(w.agent_id for w in ready.workers)
        say(f"READY: workers on agents {', '.join(result.worker_agents)}")
        job_ids = [(await grid.submit_job(list(JOB_COMMAND), memory_mb=128, ttl_s=60)).id
                   for _ in range(2)]  # fmt: skip
        say(f"batch jobs {job_ids} submitted (for the agents that did not attach)")
        await _analyse(grid, result, data, {w.name: w.agent_id for w in ready.workers}, say)
        await _run_jobs(grid, job_ids, result, say)
        await _cancel(local, grid, result, say)


async def run_demo(
    state_dir: Path,
    *,
    agents: int,
    workers: int,
    say: Say,
    config: str | None = None,
    data: DemoData | None = None,
) -> DemoResult:
    """The whole demo in ``state_dir``; DemoFailed (or LocalGridError) when a step fails.

    ``data`` defaults to the packaged sample. The grid is shut down whatever happens;
    ``result.timeline`` ends with ``shutdown``.
    """
    if workers > agents:
        raise DemoFailed(f"--workers ({workers}) must not exceed --agents ({agents})")
    data = data or DemoData.sample()
    began = time.monotonic()
    result = DemoResult()
    source = config or write_demo_config(state_dir / "demo.ldif")
    try:
        async with run_local_grid(state_dir, agents=agents, config=source, say=say) as local:
            await _one_cluster(local, workers, data, result, say)
            say("shutting down")
    finally:
        result.timeline.mark("shutdown")
        result.wall_s = time.monotonic() - began
    return result


def report_lines(result: DemoResult) -> list[str]:
    """The timeline and the headline figure, as printed at the end of the demo."""
    lines = ["", "timeline:", *("  " + line for line in result.timeline.lines()), ""]
    if result.submit_to_ready_s is not None:
        lines.append(f"submit → READY in {result.submit_to_ready_s:.2f} s")
    lines.append(f"demo wall time {result.wall_s:.2f} s")
    return lines


def as_json(result: DemoResult) -> dict[str, Any]:
    """The result as a JSON document (``podgrid demo --json``)."""
    from podgrid.demo_analysis import as_json as analysis_json

    return {
        "request_id": result.request_id,
        "submit_to_ready_s": (
            round(result.submit_to_ready_s, 3) if result.submit_to_ready_s is not None else None
        ),
        "analysis": analysis_json(result.analysis) if result.analysis else None,
        "worker_agents": result.worker_agents,
        "jobs": {str(k): v for k, v in result.jobs.items()},
        "timeline": result.timeline.as_dict(),
        "wall_s": round(result.wall_s, 3),
    }
