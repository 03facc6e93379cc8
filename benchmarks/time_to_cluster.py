"""Submit → N workers usable by a TLS ``distributed.Client``: PoD Grid, LocalCluster, dask-gateway.

Run: ``.venv/bin/python benchmarks/time_to_cluster.py [--runs 5] [--agents 8] [--sizes 2,4,8]
[--no-gateway]``. Everything on this machine, in one run:

- **PoD Grid**: the embedded local grid of ``podgrid up`` (registry, master queue with one warm
  broker, a site of K real agents with their fork servers), warmed by one cluster first. Each
  run submits a request for N workers (``min_workers = max_workers = N``), waits with
  ``PodGrid.wait_ready`` (a long-poll), makes the owner's certificate, connects a TLS client and
  ``wait_for_workers(N)``; then cancels and waits for the agents to be back to polling. The
  per-phase timeline comes from the master queue's record (server clock, seconds after the
  submit): broker assigned (STARTING), scheduler up and first publish (PUBLISHING), first and
  N-th worker attached, READY; then READY seen by the client, and usable.
- **LocalCluster**: ``distributed.LocalCluster(n_workers=N, threads_per_worker=1)`` (worker
  processes) → ``wait_for_workers(N)``.
- **dask-gateway** (local backend, ``dask-gateway-server[local]``): in its own venv
  (``benchmarks/.venv-gateway``, made on first use), see ``benchmarks/gateway_peer.py``.

Medians of ``--runs`` runs per N, after a warm-up; ratios are PoD Grid's time over the peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from distributed import Client, LocalCluster

from podgrid.client import PodGrid
from podgrid.config import setup_logging
from podgrid.demo import write_demo_config
from podgrid.localgrid import LocalGrid, run_local_grid
from podgrid.masterqueue import keys as mq_keys
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.launcher import LocalLauncher
from podgrid.protocol import RequestDetail, RequestState

HERE = Path(__file__).resolve().parent
GATEWAY_VENV = HERE / ".venv-gateway"
GATEWAY_REQUIREMENTS = HERE / "requirements-gateway.txt"
FREE = {"POLLING", "BATCH", "IDLE"}
MB = 1024 * 1024


def request_toml(n: int) -> str:
    """N workers of one core; READY at all N."""
    return (
        f'[server]\nname = "ttc-{n}"\nmin_workers = {n}\nmax_workers = {n}\n'
        'max_wait = "2m"\nttl = "10m"\n[worker]\ncores = 1\nmemory = "256MiB"\n'
    )


@dataclass
class Run:
    """One PoD Grid run: seconds after submit."""

    phases: dict[str, float] = field(default_factory=dict)


def _phases(detail: RequestDetail, submitted_epoch: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for event in detail.timeline:
        if event.state in (RequestState.STARTING, RequestState.PUBLISHING, RequestState.READY):
            out.setdefault(event.state.value, event.at.timestamp() - submitted_epoch)
    attached = sorted(w.attached_at.timestamp() - submitted_epoch for w in detail.workers)
    if attached:
        out["first attach"] = attached[0]
        out["Nth attached"] = attached[-1]
    return out


async def _agents_free(local: LocalGrid, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = await local.agent_states()
        if len(states) >= local.agents and all(s in FREE for s in states.values()):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"agents not back to polling: {await local.agent_states()}")


async def pod_run(local: LocalGrid, n: int) -> Run:
    """One cluster of ``n`` workers, submit → usable; cancelled afterwards."""
    run = Run()
    async with PodGrid(MasterQueueClient(local.masterqueue_url, local.user_token)) as grid:
        started, epoch = time.monotonic(), time.time()
        record = await grid.submit_text(request_toml(n), "toml")
        ready = await grid.wait_ready(record.id, timeout_s=120)
        run.phases["READY seen"] = time.monotonic() - started
        info = await grid.connection(record.id)
        async with Client(info.address, security=info.security(), asynchronous=True) as client:
            await client.wait_for_workers(n, timeout=60)
            run.phases["usable"] = time.monotonic() - started
        detail = await grid.request(record.id)
        run.phases.update(_phases(detail if detail.workers else ready, epoch))
        await grid.cancel(record.id)
    await _agents_free(local)
    return run


async def local_cluster_run(n: int) -> float:
    """``LocalCluster(n_workers=n)`` → ``wait_for_workers(n)``; seconds."""
    started = time.monotonic()
    async with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            asynchronous=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster, asynchronous=True) as client,
    ):
        await client.wait_for_workers(n, timeout=60)
        return time.monotonic() - started


def gateway_runs(sizes: list[int], runs: int) -> dict[int, list[float]] | str:
    """dask-gateway's figures from its own venv (made on first use); a reason when it fails."""
    python = GATEWAY_VENV / "bin" / "python"
    try:
        if not python.exists():
            print("dask-gateway: making benchmarks/.venv-gateway (first run only) ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(GATEWAY_VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "-r", str(GATEWAY_REQUIREMENTS)],
                check=True,
            )
        out = subprocess.run(
            [str(python), str(HERE / "gateway_peer.py"), "--sizes", ",".join(map(str, sizes)),
             "--runs", str(runs)],
            check=True, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return f"not measured ({e})"
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(k): v for k, v in doc.items()}


def memory(grid: LocalGrid) -> dict[str, list[tuple[float, float]]]:
    """RSS and USS (MB) of each idle agent, its zygote and the warm broker(s)."""
    kinds: dict[str, list[tuple[float, float]]] = {"agent": [], "zygote": [], "warm broker": []}
    procs: list[tuple[str, psutil.Process]] = []
    if grid.site_process is not None:
        for child in psutil.Process(grid.site_process.pid).children(recursive=True):
            cmd = " ".join(child.cmdline())
            if "podgrid.jobagent.zygote" in cmd:
                procs.append(("zygote", child))
            elif "jobagent run" in cmd:
                procs.append(("agent", child))
    launcher = grid.masterqueue.app[mq_keys.LAUNCH_LOOP].launcher
    if isinstance(launcher, LocalLauncher):
        procs += [("warm broker", psutil.Process(p.pid)) for p, _ in launcher._pool]
    for kind, proc in procs:
        info = proc.memory_full_info()
        kinds[kind].append((info.rss / MB, info.uss / MB))
    return kinds


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def main(args: argparse.Namespace) -> None:
    """Measure and print the table."""
    sizes = [int(s) for s in args.sizes.split(",")]
    pod: dict[int, list[Run]] = {n: [] for n in sizes}
    local: dict[int, list[float]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        state = args.state_dir or Path(tmp)
        config = write_demo_config(state / "bench.ldif")
        async with run_local_grid(state, agents=args.agents, config=config) as grid:
            await asyncio.sleep(args.settle)  # the agents' fork servers import Dask
            for n in sizes:
                await pod_run(grid, n)  # warm-up
                for _ in range(args.runs):
                    pod[n].append(await pod_run(grid, n))
            await asyncio.sleep(1.0)
            mem = memory(grid)
    for n in sizes:
        await local_cluster_run(n)  # warm-up
        for _ in range(args.runs):
            local[n].append(await local_cluster_run(n))
    gateway = "skipped (--no-gateway)" if args.no_gateway else gateway_runs(sizes, args.runs)

    print(
        f"\ntime to cluster, submit -> N workers usable by a client; medians of {args.runs} "
        f"runs after a warm-up; {os.cpu_count()} cores, {args.agents} agents"
    )
    header = "| N | PoD Grid | LocalCluster | dask-gateway | PoD/Local | PoD/gateway |"
    print(header)
    print("|---|---|---|---|---|---|")
    for n in sizes:
        p = _median([r.phases["usable"] for r in pod[n]])
        lc = _median(local[n])
        gw = _median(gateway[n]) if isinstance(gateway, dict) else float("nan")
        print(f"| {n} | {p:.3f} s | {lc:.3f} s | {gw:.3f} s | {p / lc:.2f} | {p / gw:.2f} |")
    if isinstance(gateway, str):
        print(f"dask-gateway: {gateway}")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        ratio = _median([r.phases["usable"] for r in pod[hi]]) / _median(
            [r.phases["usable"] for r in pod[lo]]
        )
        print(f"PoD Grid N={hi} / N={lo}: {ratio:.2f}")
    print("\nmemory of the idle parts (median MB; USS: what the process alone holds):")
    for kind, values in mem.items():
        if values:
            rss, uss = _median([v[0] for v in values]), _median([v[1] for v in values])
            print(f"  {kind} (x{len(values)}): RSS {rss:.0f} MB, USS {uss:.0f} MB")
    names = ["STARTING", "PUBLISHING", "first attach", "Nth attached", "READY", "READY seen",
             "usable"]  # fmt: skip
    print("\nPoD Grid timeline (median seconds after submit):")
    print("| N | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for n in sizes:
        cells = [_median([r.phases[k] for r in pod[n] if k in r.phases]) for k in names]
        print(f"| {n} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--sizes", default="2,4,8")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the warm-up")
    parser.add_argument("--no-gateway", action="store_true")
    parser.add_argument("--state-dir", type=Path, default=None, help="keep the grid's logs there")
    setup_logging("console", "ERROR")
    asyncio.run(main(parser.parse_args()))
