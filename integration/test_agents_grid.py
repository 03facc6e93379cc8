"""The issue's "Done when": real agents, registry, master queue and brokers on loopback.

4 agents, a request for 2 workers: 2 attach, the other 2 time out after x seconds and run
batch jobs to DONE; the cluster is cancelled and its 2 agents take batch jobs too. A broker
killed with SIGKILL sends its agents back to polling/batch within 2 x their heartbeat, and
leaves no ``dask worker`` behind.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil

from podgrid.jobagent.zygote import COMM_PREFIX, worker_comm
from tests.jobagent.grid import AgentProcess, Grid, eventually, ldif_with, running_grid

SITE, CE = "GridSite", "grid-ce"
X_S = 2  # podPollDuration
HEARTBEAT_S = 1.5  # the agents' broker probe period
REQUEST = """
[server]
name = "agents-e2e"
min_workers = 2
max_workers = 2
max_wait = "5m"
ttl = "1h"
[worker]
cores = 1
memory = "512MiB"
"""
BROKER = [
    sys.executable,
    "-m",
    "podgrid",
    "broker",
    "serve",
    "--publish-interval",
    "0.5",
    "--attach-timeout",
    "20",
]
AGENT_FLAGS = (
    "--slot-ttl",
    "900",
    "--cores",
    "1",
    "--memory",
    "2048",
    "--heartbeat",
    str(HEARTBEAT_S),
    "--grace",
    "2",
)


def stamp(event: dict[str, object]) -> float:
    """A log event's time (epoch seconds)."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def dask_workers_of(agents: list[AgentProcess]) -> list[psutil.Process]:
    """Live ``dask worker`` processes started by these agents (any depth)."""
    found = []
    for agent in agents:
        try:
            children = psutil.Process(agent.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        found += [c for c in children if _worker_name(c) is not None]
    return found


def _below(proc: psutil.Process, root: Path) -> bool:
    try:
        return Path(proc.cwd()).is_relative_to(root)
    except psutil.Error:
        return False


def _worker_name(proc: psutil.Process) -> str | None:
    """The worker name of a ``dask worker`` process, forked (``dw <name>``) or not; else None."""
    try:
        cmd, comm = proc.cmdline(), proc.name()
    except psutil.Error:
        return None
    if "distributed.cli.dask_worker" in " ".join(cmd) and "--name" in cmd[:-1]:
        return cmd[cmd.index("--name") + 1]
    return comm.removeprefix(COMM_PREFIX) if comm.startswith(COMM_PREFIX) else None


def all_dask_workers_named(names: set[str], under: Path) -> list[psutil.Process]:
    """Any process on the machine running a ``dask worker`` with one of ``names`` in a
    directory below ``under`` (this test's: other runs on the machine use the same names)."""
    cut = {worker_comm(["--name", n]).removeprefix(COMM_PREFIX) for n in names}
    hits = []
    for proc in psutil.process_iter():
        found = _worker_name(proc)
        if found is not None and (found in names or found in cut) and _below(proc, under):
            hits.append(proc)
    return hits


async def start_cluster(grid: Grid) -> int:
    """Submit the request and wait until its broker publishes in the registry."""
    record = await grid.user.submit_request(REQUEST, "toml")

    async def published() -> bool:
        rows = await grid.registry.query(f"*/PoD_Masters/{record.id}/NeededWorkers/1:")
        return bool(rows)

    await eventually(published, 60, "the broker publishing NeededWorkers")
    return record.id


def broker_process(request_id: int) -> psutil.Process:
    """The ``podgrid broker serve`` process of ``request_id`` (a child of this test)."""
    for child in psutil.Process().children(recursive=True):
        cmd = child.cmdline()
        if "broker" in cmd and "serve" in cmd and str(request_id) in cmd:
            return child
    raise AssertionError(f"no broker process for request {request_id}")


def workers_of(agents: list[AgentProcess], request_id: int) -> list[AgentProcess]:
    """The agents whose published state is WORKER on ``request_id``."""
    return [
        a
        for a in agents
        if a.status().get("params", {}).get("State") == "WORKER"
        and str(a.status().get("params", {}).get("Server")) == str(request_id)
    ]


async def test_two_attach_two_fall_back_then_cancel_sends_workers_to_batch(tmp_path: Path) -> None:
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=X_S, podPollInterval=1)
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        request_id = await start_cluster(grid)
        first_jobs = [await grid.submit_job("sleep", "1") for _ in range(2)]
        agents = [
            grid.start_agent(f"ag{i}", config, *AGENT_FLAGS, site=SITE, ce=CE) for i in range(4)
        ]

        await eventually(lambda: len(workers_of(agents, request_id)) == 2, 60, "2 agents WORKER")
        workers = workers_of(agents, request_id)
        others = [a for a in agents if a not in workers]

        async def jobs_done(ids: list[int]) -> bool:
            return all([await grid.job_state(j) == "DONE" for j in ids])

        await eventually(lambda: jobs_done(first_jobs), 60, "the first batch jobs DONE")
        for job in first_jobs:
            record = await grid.user.get_job(job)
            assert record.agent_id in {a.agent_id for a in others}, "workers must not run batch"
        for agent in others:
            # No batch work before the agent's polling window of x seconds ended.
            began = stamp(agent.events("jobagent.registry_mode")[0])
            first_batch = stamp(agent.events("jobagent.batch_started")[0])
            assert first_batch - began >= X_S - 0.1
            assert not agent.events("jobagent.attached")

        async def reported() -> bool:
            detail = await grid.user.get_request(request_id)
            return {w.agent_id for w in detail.workers} == {a.agent_id for a in workers}

        await eventually(reported, 20, "the broker reporting both agents' workers")
        assert all(a.events("jobagent.worker_started")[-1]["forked"] for a in workers)

        await grid.user.cancel_request(request_id)
        later_jobs = [await grid.submit_job("sleep", "2") for _ in range(6)]
        await eventually(lambda: jobs_done(later_jobs), 90, "the later batch jobs DONE")
        runners = {(await grid.user.get_job(j)).agent_id for j in later_jobs}
        assert {a.agent_id for a in workers} <= runners, "the freed workers must take batch jobs"
        assert dask_workers_of(agents) == []
        for agent in workers:
            assert agent.events("jobagent.worker_ended")


async def test_sigkill_of_broker_sends_agents_back_without_orphans(tmp_path: Path) -> None:
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=30, podPollInterval=1)
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        request_id = await start_cluster(grid)
        agents = [
            grid.start_agent(f"k{i}", config, *AGENT_FLAGS, site=SITE, ce=CE) for i in range(2)
        ]
        await eventually(lambda: len(workers_of(agents, request_id)) == 2, 60, "2 agents WORKER")
        await eventually(
            lambda: all(a.events("jobagent.attached") for a in agents), 60, "workers registered"
        )
        assert len(dask_workers_of(agents)) == 2
        assert all(a.events("jobagent.worker_started")[-1]["forked"] for a in agents)
        names = {a.status()["last_worker"]["name"] for a in agents}

        broker_process(request_id).send_signal(signal.SIGKILL)
        killed = time.monotonic()
        back = await eventually(
            lambda: all(a.state in ("POLLING", "BATCH") for a in agents), 20, "agents back"
        )
        assert back <= 2 * HEARTBEAT_S, f"agents came back after {back:.2f}s"
        await eventually(
            lambda: not all_dask_workers_named(names, tmp_path), 10, "dask workers gone"
        )
        assert time.monotonic() - killed < 15
        assert all(a.process.poll() is None for a in agents), "agents must survive the broker"
        await asyncio.sleep(0)


async def test_sigterm_retires_the_worker_and_exits_zero(tmp_path: Path) -> None:
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=30, podPollInterval=1)
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        request_id = await start_cluster(grid)
        agent = grid.start_agent("s0", config, *AGENT_FLAGS, site=SITE, ce=CE)
        await eventually(lambda: bool(agent.events("jobagent.attached")), 60, "worker registered")
        name = agent.status()["last_worker"]["name"]
        assert agent.events("jobagent.worker_started")[-1]["forked"], "forked from the zygote"

        async def counted(n: int) -> bool:
            return (await grid.user.get_request(request_id)).worker_count == n

        await eventually(lambda: counted(1), 20, "the broker reporting 1 worker")
        code = await asyncio.to_thread(agent.stop, 30.0)
        assert code == 0
        ended = agent.events("jobagent.worker_ended")[0]
        assert ended["reason"] == "stopped"
        assert not all_dask_workers_named({name}, tmp_path)

        await eventually(lambda: counted(0), 20, "the broker sees the worker leave")
        assert agent.status()["params"]["State"] == "EXITING"
