"""Time to a 2-worker cluster on a real single-host Slurm: PoD Grid warm and cold, and
dask-jobqueue's ``SLURMCluster`` on the same Slurm in the same run.

Run: ``.venv/bin/pip install -r benchmarks/requirements-slurm.txt`` once, then
``.venv/bin/python benchmarks/slurm_time_to_cluster.py [--trials N]``. It starts the tests'
throw-away Slurm (:mod:`tests.harness.slurm`: munged, slurmctld, two slurmd on 127.0.0.1,
``batch_sched_delay=0``) and a real local grid (registry, master queue, brokers started by
the local launcher), then measures, per trial:

- ``sbatch → agent POLLING``: from the factory's ``sbatch`` (its log event) to each agent's
  ``jobagent.started`` (logged as it enters POLLING, its first state);
- ``warm``: submit a request for 2 workers while 2 agents already run as Slurm jobs → the
  request READY (2 workers attached, usable);
- ``cold``: the factory and its 2 agents start when the request is submitted → READY;
- ``dask-jobqueue``: ``SLURMCluster(...).scale(2)`` → ``client.wait_for_workers(2)``.

Figures are printed (median, min, max over trials); nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from distributed import Client

try:  # the benchmark's own requirement; it sets a signal handler, so only in the main thread
    from dask_jobqueue import SLURMCluster
except ImportError:
    SLURMCluster = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from podgrid.config import setup_logging
from tests.harness.slurm import SlurmCluster, start_slurm
from tests.jobagent.grid import Grid, eventually, running_grid
from tests.slurm.site import SiteProcess, slurm_site
from tests.slurm.test_agents import AGENT_FLAGS, BROKER, REQUEST, config


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _polling_times(site: SiteProcess, n: int) -> list[float]:
    """Seconds from the factory's sbatch to each of ``n`` agents entering POLLING.

    An agent's ``jobagent.started`` event is logged as it enters POLLING, the first state.
    """
    await eventually(
        lambda: len([a for a in site.agents() if a.events("jobagent.started")]) >= n,
        120,
        "the agents started",
    )
    submitted = _epoch(site.events("site.slurm_submitted")[0]["timestamp"])
    return [_epoch(a.events("jobagent.started")[0]["timestamp"]) - submitted for a in site.agents()]


async def _ready(grid: Grid) -> tuple[int, float]:
    """Submit the 2-worker request; its id and the seconds until it is READY."""
    started = time.monotonic()
    record = await grid.user.submit_request(REQUEST, "toml")

    async def ready() -> bool:
        state = str((await grid.user.get_request(record.id)).state)
        return state in ("READY", "FULL")

    await eventually(ready, 120, "READY", step_s=0.02)
    return record.id, time.monotonic() - started


async def _back_to_polling(grid: Grid, site: SiteProcess, request_id: int) -> None:
    await grid.user.cancel_request(request_id)
    await eventually(lambda: len(site.in_state("POLLING")) == 2, 60, "polling again")


async def pod_grid(cluster: SlurmCluster, tmp: Path, trials: int) -> dict[str, list[float]]:
    """PoD Grid's figures: sbatch → POLLING, warm and cold submit → READY."""
    found: dict[str, list[float]] = {"sbatch → agent POLLING": [], "warm": [], "cold": []}
    async with running_grid(tmp, launcher="local", broker_command=BROKER) as grid:
        cfg = config(tmp)
        for n in range(trials):
            # Cold: nothing runs on Slurm; the factory starts with the request.
            record_task = asyncio.create_task(_ready(grid))
            async with slurm_site(
                grid, cluster, tmp, cfg, *AGENT_FLAGS, agents=2, name=f"cold{n}"
            ) as site:
                request_id, took = await record_task
                found["cold"].append(took)
                found["sbatch → agent POLLING"] += await _polling_times(site, 2)
                await _back_to_polling(grid, site, request_id)
                # Warm: the same 2 agents now poll as Slurm jobs.
                request_id, took = await _ready(grid)
                found["warm"].append(took)
                await _back_to_polling(grid, site, request_id)
    return found


def jobqueue(cluster: SlurmCluster, tmp: Path, trials: int) -> list[float]:
    """``SLURMCluster(...).scale(2)`` → ``wait_for_workers(2)`` on the same Slurm."""
    if SLURMCluster is None:
        print("dask-jobqueue is not installed: pip install -r benchmarks/requirements-slurm.txt")
        return []

    os.environ["SLURM_CONF"] = str(cluster.conf)  # dask-jobqueue runs sbatch in our env
    took = []
    for _ in range(trials):
        with (
            SLURMCluster(
                cores=1,
                processes=1,
                memory="512MB",
                queue=cluster.partition,
                walltime="00:10:00",
                python=sys.executable,
                log_directory=str(tmp / "jobqueue"),
                scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
                worker_extra_args=["--no-dashboard"],
            ) as slurm,
            Client(slurm) as client,
        ):
            started = time.monotonic()
            slurm.scale(2)
            client.wait_for_workers(2, timeout=120)
            took.append(time.monotonic() - started)
            slurm.scale(0)
        cluster.cancel_all()
    return took


def _row(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<28} (not measured)"
    return (
        f"{name:<28} median {statistics.median(values):6.2f} s   "
        f"min {min(values):6.2f}   max {max(values):6.2f}   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    setup_logging("console", "WARNING")
    with start_slurm() as cluster, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pod = asyncio.run(pod_grid(cluster, tmp / "pod", args.trials))
        print(f"\nsingle-host Slurm, 2 nodes on 127.0.0.1, {os.cpu_count()} cores; 2 workers:")
        for name, values in pod.items():
            print(_row(f"PoD Grid {name}", values), flush=True)
        cluster.cancel_all()
        jq = jobqueue(cluster, tmp, args.trials)
    print(_row("dask-jobqueue scale(2)", jq))
    print(json.dumps({"pod_grid": pod, "dask_jobqueue": jq}))


if __name__ == "__main__":
    main()
