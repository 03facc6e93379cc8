"""The single-host Slurm itself: jobs run, arrays run at once, drain and restart behave."""

from __future__ import annotations

import time

from tests.harness.slurm import SlurmCluster


def _wait_jobs(
    cluster: SlurmCluster, state: str, n: int, timeout_s: float = 20
) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [j for j in cluster.jobs() if j["state"] == state]
        if len(jobs) >= n:
            return jobs
        assert time.monotonic() < deadline, cluster.jobs()
        time.sleep(0.1)


def test_a_job_runs_and_completes_within_seconds(slurm_cluster: SlurmCluster) -> None:
    started = time.monotonic()
    out = slurm_cluster.run("sbatch", "--parsable", "--wrap", "true", "-o", "/dev/null")
    job_id = out.strip()
    deadline = started + 10
    # Finished jobs of earlier tests stay listed (MinJobAge): look at this one only.
    while [j["state"] for j in slurm_cluster.jobs() if j["id"] == job_id] != ["COMPLETED"]:
        assert time.monotonic() < deadline, slurm_cluster.jobs()
        time.sleep(0.05)


def test_drained_node_gets_no_new_job(slurm_cluster: SlurmCluster) -> None:
    first, second = slurm_cluster.nodes
    slurm_cluster.drain(first)
    slurm_cluster.run("sbatch", "--array=0-3", "--wrap", "sleep 30", "-o", "/dev/null", "--mem=10")
    running = _wait_jobs(slurm_cluster, "RUNNING", 4)
    assert {j["node"] for j in running} == {second}


def test_jobs_survive_a_controller_restart(slurm_cluster: SlurmCluster) -> None:
    slurm_cluster.run("sbatch", "--wrap", "sleep 30", "-o", "/dev/null", "--mem=10")
    before = _wait_jobs(slurm_cluster, "RUNNING", 1)
    slurm_cluster.restart_controller()
    assert [j["id"] for j in _wait_jobs(slurm_cluster, "RUNNING", 1)] == [before[0]["id"]]
