"""The Slurm factory under faults on a real Slurm: the wall-time limit, slurmctld restarted,
a drained node, sbatch refused, and an sbatch that failed after queuing the job."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from podgrid.jobagent.factory import AgentSpec, SiteFactory
from podgrid.jobagent.slurm import SlurmBackend, SlurmJobOptions, job_name
from podgrid.slurmctl import SlurmCommands
from tests.harness.slurm import SlurmCluster
from tests.jobagent.grid import eventually, running_grid
from tests.slurm.site import SiteProcess, slurm_site
from tests.slurm.test_agents import BROKER, config

ONE_WORKER = """
[server]
name = "wall-time"
min_workers = 1
max_workers = 1
max_wait = "5m"
ttl = "1h"
[worker]
cores = 1
memory = "256MiB"
"""
SMALL_AGENT = ("--cores", "1", "--memory", "300", "--slot-ttl", "900", "--grace", "2")


def agent_process(agent_id: str) -> psutil.Process:
    """The running ``podgrid jobagent run`` of ``agent_id`` (a Slurm job's batch shell)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "jobagent" in cmd and agent_id in cmd:
            return proc
    raise AssertionError(f"no process for agent {agent_id}")


def live(site: SiteProcess, cluster: SlurmCluster) -> list[dict[str, str]]:
    """The factory's jobs that are pending or running."""
    return [j for j in site.jobs(cluster) if j["state"] in ("PENDING", "RUNNING")]


async def wait_polling(site: SiteProcess, n: int, timeout_s: float = 60) -> None:
    """Until ``n`` agents are up (polling or looking for batch work)."""
    await eventually(
        lambda: len([a for a in site.agents() if a.state in ("POLLING", "BATCH")]) >= n,
        timeout_s,
        f"{n} agents polling",
        step_s=0.2,
    )


@pytest.mark.timeout(240)
async def test_the_wall_time_limit_retires_the_worker_before_slurm_kills_it(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        record = await grid.user.submit_request(ONE_WORKER, "toml")
        # Two minutes (Slurm counts whole minutes; a broker wants >= 90 s of slot), and
        # --signal=B:TERM@60, which Slurm delivers up to ~30 s early.
        flags = ("--cores", "1", "--memory", "768", "--slot-ttl", "120", "--grace", "2")
        async with slurm_site(
            grid,
            slurm_cluster,
            tmp_path,
            config(tmp_path),
            *flags,
            "--signal-grace",
            "60",
            agents=1,
        ) as site:
            await eventually(lambda: site.in_state("WORKER", record.id), 60, "the agent WORKER")
            agent = site.agents()[0]
            [started] = agent.events("jobagent.started")
            assert 100 < started["ttl_s"] <= 120, started  # the job's two minutes, from squeue
            await eventually(lambda: agent.events("jobagent.exited"), 130, "the agent leaving")
            [stopping] = agent.events("jobagent.stopping")
            # Slurm's --signal=B:TERM@60, or its own clock (the slot's end), whichever came first.
            assert stopping["reason"] in ("slot_ttl", "SIGTERM"), stopping
            [ended] = agent.events("jobagent.worker_ended")
            assert ended["reason"] == "stopped"  # retired through the broker, not killed
            [job] = [j for j in site.jobs(slurm_cluster) if j["name"].endswith(agent.agent_id)]
            await eventually(
                lambda: slurm_cluster.jobs() and _state(slurm_cluster, job["id"]) != "RUNNING",
                30,
                "the job to end",
            )
            assert _state(slurm_cluster, job["id"]) == "COMPLETED"  # not TIMEOUT
            await eventually(lambda: site.site().get("submitted") == 2, 30, "a replacement")


def _state(cluster: SlurmCluster, job_id: str) -> str:
    return next(j["state"] for j in cluster.jobs() if j["id"] == job_id)


async def test_slurmctld_restarted_while_agents_run_no_double_submit(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    async with (
        running_grid(tmp_path) as grid,
        slurm_site(grid, slurm_cluster, tmp_path, config(tmp_path), *SMALL_AGENT, agents=2) as site,
    ):
        await wait_polling(site, 2)
        before = {j["shown"] for j in live(site, slurm_cluster)}
        assert len(before) == 2
        await asyncio.to_thread(slurm_cluster.stop_controller)
        # An agent ends while the controller is away: the factory cannot know yet.
        gone = site.agents()[0]
        agent_process(gone.agent_id).send_signal(signal.SIGTERM)
        await eventually(lambda: gone.events("jobagent.exited"), 30, "the agent exiting")
        # squeue gives up after ~10 s; until then, and after, nothing is taken for gone.
        await eventually(lambda: site.events("site.slurm_unreachable"), 30, "squeue failing")
        assert site.site()["submitted"] == 2
        assert site.process.poll() is None

        await asyncio.to_thread(slurm_cluster.start_controller)
        await eventually(lambda: site.site().get("submitted") == 3, 60, "one replacement")
        await eventually(lambda: site.agents()[-1].state == "POLLING", 60, "it polls")
        await asyncio.sleep(3)
        assert site.site()["submitted"] == 3  # exactly one: nothing submitted twice
        now = {j["shown"] for j in live(site, slurm_cluster)}
        assert len(now) == 2
        assert len(now & before) == 1  # the other agent kept running through the restart


async def test_a_drained_node_gets_no_new_agents_and_the_queue_is_not_flooded(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    first, second = slurm_cluster.nodes
    slurm_cluster.drain(first)
    async with running_grid(tmp_path) as grid:
        extra = (*SMALL_AGENT, "--max-queued", "1", "--submit-interval", "0.5")
        async with slurm_site(
            grid, slurm_cluster, tmp_path, config(tmp_path), *extra, agents=3
        ) as site:
            await wait_polling(site, 3)
            assert {j["node"] for j in live(site, slurm_cluster)} == {second}
            # Nowhere to run now: two agents end, their replacements may only queue, one at most.
            slurm_cluster.drain(second)
            for job in live(site, slurm_cluster)[:2]:
                slurm_cluster.run("scancel", job["shown"])
            await eventually(
                lambda: site.metric("podgrid_site_agents", state="queued") == 1, 30, "1 queued"
            )
            await asyncio.sleep(3)
            assert site.site()["submitted"] == 4  # not 5: max-queued holds the second back
            pending = [j for j in live(site, slurm_cluster) if j["state"] == "PENDING"]
            assert len(pending) == 1

            slurm_cluster.resume(first)
            await eventually(lambda: site.site().get("submitted") == 5, 30, "the fifth agent")
            await eventually(
                lambda: len([j for j in live(site, slurm_cluster) if j["state"] == "RUNNING"]) == 3,
                30,
                "3 agents running",
            )
            nodes = [j["node"] for j in live(site, slurm_cluster)]
            assert sorted(nodes) == sorted([first, first, second]), nodes


async def test_refused_sbatch_backs_off_counts_and_recovers(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    slurm_cluster.set_partition("INACTIVE")  # sbatch: "Required partition not available"
    async with running_grid(tmp_path) as grid:
        extra = (*SMALL_AGENT, "--submit-interval", "0")
        async with slurm_site(
            grid, slurm_cluster, tmp_path, config(tmp_path), *extra, agents=2
        ) as site:
            await eventually(lambda: site.site().get("refused", 0) >= 1, 30, "a refusal")
            await asyncio.sleep(6)
            refused = site.site()["refused"]
            # Back-off 1, 2, 4 s...: a handful of tries in 6 s, not one per loop turn.
            assert 2 <= refused <= 5, refused
            assert site.metric("podgrid_site_submit_refused_total") == refused
            assert site.site()["submitted"] == 0
            assert not site.jobs(slurm_cluster)
            [first] = site.events("site.submit_refused")[:1]
            assert "partition" in first["error"].lower()

            slurm_cluster.set_partition("UP")
            await wait_polling(site, 2, timeout_s=60)
            assert site.site()["submitted"] == 2
            assert len(site.jobs(slurm_cluster)) == 2


async def test_an_sbatch_that_failed_after_queuing_is_adopted_not_repeated(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    # sbatch that queues the job and then reports a time-out, once (slurmctld restarting).
    flaky = tmp_path / "sbatch"
    marker = tmp_path / "failed-once"
    flaky.write_text(
        "#!/bin/sh\n"
        f'[ -e {marker} ] && exec {slurm_cluster.bins["sbatch"]} "$@"\n'
        f'touch {marker}; {slurm_cluster.bins["sbatch"]} "$@" >/dev/null || exit 1\n'
        'echo "sbatch: error: Socket timed out on send/recv operation" >&2; exit 1\n'
    )
    flaky.chmod(0o755)
    commands = SlurmCommands(sbatch=str(flaky), env={"SLURM_CONF": str(slurm_cluster.conf)})
    backend = SlurmBackend(SlurmJobOptions(output_dir=tmp_path / "out"), commands, refresh_s=0.2)

    def make(n: int) -> AgentSpec:
        return AgentSpec(
            f"adopt-{n}",
            [sys.executable, "-c", "import time; time.sleep(60)"],
            dict(os.environ),
            tmp_path / f"a{n}",
        )

    factory = SiteFactory(
        backend, agents=1, make_spec=make, state_dir=tmp_path, poll_s=0.1, backoff_s=0.2
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(factory.run(stopping))
    try:
        await eventually(lambda: factory.refused == 1 and factory.running, 30, "the retry")
        await asyncio.sleep(1)
        named = [j for j in slurm_cluster.jobs() if j["name"] == job_name([make(1)])]
        assert len(named) == 1, named  # queued once, adopted on the retry
        assert factory.submitted == 1
        assert factory.running[0].handle == f"slurm:{named[0]['id']}"
    finally:
        stopping.set()
        await task
