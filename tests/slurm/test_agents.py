"""Job agents as real Slurm jobs: they attach to a broker, fall back to batch work, survive
``scancel`` like a SIGTERM, and come 20 at a time as one job array."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.harness.slurm import SlurmCluster
from tests.jobagent.grid import Grid, eventually, ldif_with, running_grid
from tests.slurm.site import CE, SITE, slurm_site

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
REQUEST = """
[server]
name = "slurm-agents"
min_workers = 2
max_workers = 2
max_wait = "5m"
ttl = "1h"
[worker]
cores = 1
memory = "512MiB"
"""
AGENT_FLAGS = ("--cores", "1", "--memory", "768", "--slot-ttl", "900", "--grace", "2")


def config(tmp: Path) -> str:
    """The CE's entry: short polling, and the Slurm options a site admin would set there."""
    return ldif_with(
        tmp / "c.ldif",
        SITE,
        CE,
        podPollDuration=2,
        podPollInterval=1,
        podSlurmPartition="debug",
        podSlurmOption="--comment=podgrid-agent",
    )


async def start_cluster(grid: Grid) -> int:
    """Submit the request; its id once its broker publishes NeededWorkers."""
    record = await grid.user.submit_request(REQUEST, "toml")

    async def published() -> bool:
        return bool(await grid.registry.query(f"*/PoD_Masters/{record.id}/NeededWorkers/1:"))

    await eventually(published, 60, "the broker publishing NeededWorkers")
    return record.id


async def jobs_done(grid: Grid, ids: list[int]) -> bool:
    """Whether every batch job is DONE."""
    return all([await grid.job_state(j) == "DONE" for j in ids])


async def test_slurm_agents_attach_and_fall_back_to_batch(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        request_id = await start_cluster(grid)
        async with slurm_site(
            grid, slurm_cluster, tmp_path, config(tmp_path), *AGENT_FLAGS, agents=3
        ) as site:
            await eventually(
                lambda: len(site.in_state("WORKER", request_id)) == 2, 90, "2 agents WORKER"
            )
            job_ids = [await grid.submit_job("sleep", "1", memory_mb=256) for _ in range(2)]
            await eventually(lambda: jobs_done(grid, job_ids), 60, "the batch jobs DONE")
            workers = {a.agent_id for a in site.in_state("WORKER", request_id)}
            for job in job_ids:
                assert (await grid.user.get_job(job)).agent_id not in workers

            # One sbatch: a job array of 3 on the CE's partition, each agent its own element.
            jobs = site.jobs(slurm_cluster)
            assert len(jobs) == 3, jobs
            assert len({j["shown"].split("_")[0] for j in jobs}) == 1, jobs
            assert {j["state"] for j in jobs} == {"RUNNING"}
            comments = slurm_cluster.run("squeue", "-h", "-o", "%k|%P", "--name", jobs[0]["name"])
            assert set(comments.split()) == {"podgrid-agent|debug"}

            # The slot is what Slurm granted: cores, memory and the end of the job.
            started = site.agents()[0].events("jobagent.started")[0]
            assert started["cores"] == 1
            assert started["memory_mb"] == 768
            assert 800 < started["ttl_s"] <= 900
            assert started["sources"] == {
                "cores": "SLURM_CPUS_ON_NODE",
                "memory_mb": "SLURM_MEM_PER_NODE",
                "ttl_s": "squeue %e",
                "packages": "none",
            }
            assert site.metric("podgrid_site_agents", state="running") == 3
            assert site.metric("podgrid_site_agents", state="queued") == 0
            assert site.metric("podgrid_site_agents_submitted_total") == 3
        assert site.process.returncode == 0
        # The factory drained its agents: every job ended, none by force.
        ended = site.jobs(slurm_cluster)
        assert {j["state"] for j in ended} == {"COMPLETED"}, ended


async def test_scancel_of_an_agent_is_survived_like_a_sigterm(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    async with (
        running_grid(tmp_path) as grid,
        slurm_site(grid, slurm_cluster, tmp_path, config(tmp_path), *AGENT_FLAGS, agents=1) as site,
    ):
        job_id = await grid.submit_job("sleep", "30", memory_mb=256)
        await eventually(lambda: len(site.in_state("BATCH")) == 1, 60, "the agent in BATCH")
        victim = site.agents()[0]
        [job] = site.jobs(slurm_cluster)
        slurm_cluster.run("scancel", job["shown"])  # what pre-emption does: TERM to all

        await eventually(lambda: victim.events("jobagent.exited"), 30, "the agent exits")
        [stopping] = victim.events("jobagent.stopping")
        assert stopping["reason"] == "SIGTERM"
        # Not the job's failure: it went back to the queue, and the replacement runs it.
        history = [str(h.state) for h in (await grid.user.get_job(job_id)).history]
        assert "WAITING" in history[1:], history
        await eventually(lambda: len(site.agents()) == 2, 30, "a replacement agent")
        replacement = site.agents()[1]
        await eventually(
            lambda: replacement.params.get("JobId") == job_id, 60, "the replacement runs it"
        )
        cancelled = [j for j in site.jobs(slurm_cluster) if j["id"] == job["id"]]
        assert cancelled[0]["state"] == "CANCELLED"
        assert site.site()["failed"] == 0


async def test_a_job_array_of_20_agents(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    async with running_grid(tmp_path) as grid:
        started = time.monotonic()
        async with slurm_site(
            grid,
            slurm_cluster,
            tmp_path,
            config(tmp_path),
            "--cores",
            "1",
            "--memory",
            "200",
            agents=20,
        ) as site:
            await eventually(
                lambda: len([a for a in site.agents() if a.state in ("POLLING", "BATCH")]) == 20,
                120,
                "20 agents polling",
                step_s=0.5,
            )
            took = time.monotonic() - started
            jobs = site.jobs(slurm_cluster)
            assert len(jobs) == 20
            assert len({j["shown"].split("_")[0] for j in jobs}) == 1, "one sbatch, one array"
            assert {j["state"] for j in jobs} == {"RUNNING"}
            assert set(slurm_cluster.nodes) == {j["node"] for j in jobs}
            assert site.site()["submitted"] == 20
            print(f"sbatch of 20 -> 20 agents polling: {took:.1f} s")
        assert site.process.returncode == 0
        assert {j["state"] for j in site.jobs(slurm_cluster)} == {"COMPLETED"}
