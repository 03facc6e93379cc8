"""The master queue's Slurm launcher: a broker as a Slurm job on its partition, its agents as
Slurm jobs too, the broker's secrets in its environment only, and a clean stop on cancel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

from podgrid.masterqueue import keys
from podgrid.masterqueue.launcher_slurm import JOB_NAME_PREFIX, SlurmLauncher
from podgrid.masterqueue.loops import LaunchLoop
from podgrid.masterqueue.signing import load_sign_key
from podgrid.slurmctl import SlurmCommands
from tests.harness.slurm import SlurmCluster
from tests.jobagent.grid import Grid, eventually, running_grid
from tests.slurm.site import slurm_site
from tests.slurm.test_agents import AGENT_FLAGS, BROKER, REQUEST, config


@contextlib.asynccontextmanager
async def slurm_launch_loop(
    grid: Grid, cluster: SlurmCluster, tmp: Path
) -> AsyncIterator[SlurmLauncher]:
    """The master queue's launch loop, with the Slurm launcher, ticking in the background."""
    settings = grid.mq_app[keys.SETTINGS]
    launcher = SlurmLauncher(
        BROKER,
        tmp / "brokers",
        partition=cluster.partition,
        directives=["--comment=podgrid-broker"],
        sign_key=load_sign_key(settings.sign_key_path),
        commands=SlurmCommands(env={"SLURM_CONF": str(cluster.conf)}),
    )
    loop = LaunchLoop(
        grid.mq_app[keys.STORE],
        launcher,
        grid.mq_app[keys.METRICS],
        url=lambda: grid.mq_url,
        registry_url=f"udp://{grid.udp[0]}:{grid.udp[1]}",
        stop_grace_s=1.0,
    )

    async def ticking() -> None:
        while True:
            await loop.tick()
            await asyncio.sleep(0.3)

    task = asyncio.create_task(ticking())
    try:
        yield launcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await loop.stop_all()


def broker_process(request_id: int) -> psutil.Process:
    """The running ``podgrid broker serve`` of ``request_id``."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "broker" in cmd and "serve" in cmd and str(request_id) in cmd:
            return proc
    raise AssertionError(f"no broker process for request {request_id}")


async def test_a_broker_as_a_slurm_job_gets_its_slurm_agents_and_stops_on_cancel(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    async with (
        running_grid(tmp_path) as grid,
        slurm_launch_loop(grid, slurm_cluster, tmp_path),
        slurm_site(grid, slurm_cluster, tmp_path, config(tmp_path), *AGENT_FLAGS, agents=3) as site,
    ):
        record = await grid.user.submit_request(REQUEST, "toml")

        async def ready() -> bool:
            return str((await grid.user.get_request(record.id)).state) in ("READY", "FULL")

        await eventually(ready, 90, "the request READY (or FULL)", step_s=0.2)
        detail = await grid.user.get_request(record.id)
        assert detail.master_host == f"slurm:{slurm_cluster.partition}"
        assert len(site.in_state("WORKER", record.id)) == 2

        [job] = [j for j in slurm_cluster.jobs() if j["name"] == f"{JOB_NAME_PREFIX}{record.id}"]
        assert job["state"] == "RUNNING"
        shown = slurm_cluster.run("squeue", "-h", "-j", job["id"], "-o", "%P|%k")
        assert shown.strip() == f"{slurm_cluster.partition}|podgrid-broker"
        # The broker's token and sign secret are in its environment, never on a command line.
        broker = broker_process(record.id)
        environ = broker.environ()
        token, secret = environ["PODGRID_TOKEN"], environ["PODGRID_SIGN_SECRET"]
        assert token
        assert secret
        assert token not in " ".join(broker.cmdline())
        assert secret not in " ".join(broker.cmdline())
        script = slurm_cluster.run("scontrol", "write", "batch_script", job["id"], "-")
        assert token not in script
        assert secret not in script

        await grid.user.cancel_request(record.id)
        await eventually(
            lambda: (
                next(j for j in slurm_cluster.jobs() if j["id"] == job["id"])["state"]
                not in ("RUNNING", "COMPLETING")
            ),
            60,
            "the broker's job to end",
        )
        ended = next(j for j in slurm_cluster.jobs() if j["id"] == job["id"])
        assert ended["state"] == "COMPLETED"  # SIGTERM to the broker: it drained and left
        await eventually(
            lambda: len(site.in_state("POLLING")) + len(site.in_state("BATCH")) == 3,
            60,
            "the agents back to polling",
        )
