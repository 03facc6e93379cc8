"""Slot waste over a simulated day: the xJA policy versus a DIRAC-like pilot, 200 agents.

Run: ``.venv/bin/python benchmarks/slot_waste.py [--agents 200] [--hours 24] [--scale 1440]``.
A real registry and a real master queue (SQLite) run on loopback; the agents are light
coroutines that talk to them over HTTP exactly as agents do (registry long-poll queries,
``POST /v1/match`` and ``/finish``), in compressed time (``--scale`` simulated seconds per
real second). PoD servers arrive at random (Poisson, mean every 20 min, 5-40 workers, living
30-180 min) and are published in the registry as brokers publish them; the batch queue is
never empty (jobs of 20-120 min). Attaching and running work is simulated by sleeping.

Policies (same demand, same services):
* xJA: poll the registry for x = 60 s (long-poll); a server → work for it until it ends;
  nothing → batch job from the master queue, checking the registry between jobs.
* DIRAC-like: a pilot for PoD work only: ask the registry, on a failed match back off
  (60 s doubling to 10 min), exit after 10 failed matches in a row (the slot goes back).
Printed: the fraction of slot time the agents held while polling without work (target for
the xJA < 2 %), and the share of the servers' requested worker time that was served.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from podgrid.config import setup_logging
from podgrid.masterqueue import keys
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.monitoring.client import HttpPublisher, RegistryClient
from podgrid.protocol import JobSpec, SlotDescription
from tests.jobagent.grid import Grid, running_grid

X_S = 60.0  # simulated seconds: podPollDuration
DIRAC_BACKOFF_S, DIRAC_BACKOFF_MAX_S, DIRAC_MAX_FAILS = 60.0, 600.0, 10
QUERY = "*/PoD_Masters/*/NeededWorkers/1:"


@dataclass
class Sim:
    """Compressed time and the shared simulated world."""

    scale: float
    end_s: float
    t0: float = field(default_factory=time.monotonic)
    servers: dict[str, Server] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    pilots_exited: int = 0

    def now(self) -> float:
        return (time.monotonic() - self.t0) * self.scale

    async def sleep(self, sim_s: float) -> None:
        await asyncio.sleep(max(0.0, min(sim_s, self.end_s - self.now())) / self.scale)


@dataclass
class Server:
    """A simulated PoD server: wants ``want`` workers until ``ends_at``."""

    id: str
    want: int
    arrived_at: float
    ends_at: float
    attached: int = 0
    worker_s: float = 0.0

    def requested_s(self, sim_end: float) -> float:
        """Worker-seconds asked for: ``want`` workers from arrival to the end of its life."""
        return self.want_at_start * max(0.0, min(self.ends_at, sim_end) - self.arrived_at)

    def __post_init__(self) -> None:
        self.want_at_start = self.want

    def attach(self) -> bool:
        if self.attached >= self.want:
            return False
        self.attached += 1
        return True


@dataclass
class Tally:
    """Slot time of one policy's agents, in simulated seconds."""

    held: float = 0.0
    polling: float = 0.0
    worker: float = 0.0
    batch: float = 0.0


async def publish(pub: HttpPublisher, server: Server) -> None:
    needed = max(0, server.want - server.attached)
    await pub.send(
        "PoD_Masters", server.id, {"Address": "sim://" + server.id, "NeededWorkers": needed}
    )


async def servers_arrive(sim: Sim, pub: HttpPublisher, rng: random.Random, prefix: str) -> None:
    """Poisson arrivals; each server republishes its need every simulated minute."""
    n = 0
    while sim.now() < sim.end_s:
        await sim.sleep(rng.expovariate(1 / 1200))
        n += 1
        now = sim.now()
        server = Server(f"{prefix}{n}", rng.randint(5, 40), now, now + rng.uniform(1800, 10800))
        sim.servers[server.id] = server
        sim.tasks.add(asyncio.create_task(keep_publishing(sim, pub, server)))


async def keep_publishing(sim: Sim, pub: HttpPublisher, server: Server) -> None:
    while sim.now() < min(server.ends_at, sim.end_s) and server.attached < server.want:
        await publish(pub, server)
        await sim.sleep(60)
    server.want = server.attached  # full or over: publish the final NeededWorkers=0
    await publish(pub, server)


async def work_for(sim: Sim, server: Server, tally: Tally) -> None:
    started = sim.now()
    await sim.sleep(server.ends_at - started)
    tally.worker += sim.now() - started
    server.worker_s += sim.now() - started


async def find_server(
    sim: Sim, reg: RegistryClient, wait_sim_s: float | None, since_ms: int | None = None
) -> tuple[Server | None, int | None]:
    """One registry round (long-poll when ``wait_sim_s``): a server that took us, and the
    registry clock to pass as ``since_ms`` next time."""
    wait = None if wait_sim_s is None else max(0.0, wait_sim_s / sim.scale)
    rows = await reg.query(QUERY, wait_s=wait, since_ms=since_ms if wait is not None else None)
    for row in sorted(rows, key=lambda r: random.random()):
        server = sim.servers.get(row.node)
        if server is not None and server.ends_at > sim.now() and server.attach():
            return server, rows.now_ms
    return None, rows.now_ms


async def xja(sim: Sim, n: int, reg: RegistryClient, mq: MasterQueueClient, tally: Tally) -> None:
    slot = SlotDescription(agent_id=f"x{n}", site="Sim", cores=1, memory_mb=2048, ttl_s=86400)
    while sim.now() < sim.end_s:
        started, server, since = sim.now(), None, None
        server, since = await find_server(sim, reg, None)
        while server is None and sim.now() - started < X_S and sim.now() < sim.end_s:
            # One long-poll for the rest of the window (a real agent splits it into y-long
            # requests to notice configuration changes; the registry work is the same).
            server, since = await find_server(sim, reg, X_S - (sim.now() - started), since)
        tally.polling += sim.now() - started
        while server is None and sim.now() < sim.end_s:
            claim = await mq.match(slot)
            if claim is None:
                break
            began = sim.now()
            await sim.sleep(float(claim.job.spec.env["SIM_S"]))
            await mq.finish_job(claim.job.id, claim.lease_token, 0)
            tally.batch += sim.now() - began
            checked = sim.now()
            server, _ = await find_server(sim, reg, None)
            tally.polling += sim.now() - checked
        if server is not None:
            await work_for(sim, server, tally)
    tally.held += sim.end_s


async def dirac(sim: Sim, n: int, reg: RegistryClient, tally: Tally) -> None:
    fails, joined = 0, sim.now()
    while sim.now() < sim.end_s and fails < DIRAC_MAX_FAILS:
        asked = sim.now()
        server, _ = await find_server(sim, reg, None)
        if server is not None:
            tally.polling += sim.now() - asked
            fails = 0
            await work_for(sim, server, tally)
            continue
        fails += 1
        await sim.sleep(min(DIRAC_BACKOFF_S * 2 ** (fails - 1), DIRAC_BACKOFF_MAX_S))
        tally.polling += sim.now() - asked
    tally.held += sim.now() - joined
    if fails >= DIRAC_MAX_FAILS:
        sim.pilots_exited += 1


async def run_policy(policy: str, args: argparse.Namespace, tmp: Path) -> tuple[Tally, Sim]:
    """Run one policy's agents over the simulated period; their tally and the world."""
    async with running_grid(tmp) as grid:
        await fill_queue(grid, args)
        sim = Sim(args.scale, args.hours * 3600.0)
        tally = Tally()
        async with MasterQueueClient(grid.mq_url, grid.agent_token) as mq:
            rng = random.Random(args.seed)
            arrivals = asyncio.create_task(servers_arrive(sim, grid.publisher, rng, policy[0]))
            if policy == "xJA":
                agents = [xja(sim, i, grid.registry, mq, tally) for i in range(args.agents)]
            else:
                agents = [dirac(sim, i, grid.registry, tally) for i in range(args.agents)]
            await asyncio.gather(*agents)
            arrivals.cancel()
            for task in sim.tasks:
                task.cancel()
            await asyncio.gather(arrivals, *sim.tasks, return_exceptions=True)
        return tally, sim


async def fill_queue(grid: Grid, args: argparse.Namespace) -> None:
    """Enough batch work that the queue never runs dry (1.5x what the slots can run)."""
    rng = random.Random(args.seed + 1)
    count = int(args.agents * args.hours * 3600 / (70 * 60) * 1.5) + 10
    specs = [
        JobSpec(command=["true"], env={"SIM_S": str(rng.uniform(1200, 7200))}, ttl_s=86400)
        for _ in range(count)
    ]
    await grid.mq_app[keys.STORE].submit_jobs("alice", specs)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--scale", type=float, default=1440.0, help="simulated s per real s")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    setup_logging("console", "ERROR")
    print(f"{args.agents} agents, {args.hours:g} simulated hours at {args.scale:g}x")
    for policy in ("xJA", "DIRAC-like"):
        with tempfile.TemporaryDirectory(prefix="podgrid-waste-") as tmp:
            started = time.monotonic()
            tally, sim = await run_policy(policy, args, Path(tmp))
        waste = tally.polling / tally.held if tally.held else 0.0
        wanted = sum(srv.requested_s(sim.end_s) for srv in sim.servers.values())
        served = sum(srv.worker_s for srv in sim.servers.values()) / max(wanted, 1.0)
        target = "  (target < 2%)" if policy == "xJA" else ""
        print(f"  {policy:10s} polling without work {waste:6.2%} of held slot time{target}")
        hours = f"held {tally.held / 3600:.0f} slot-h: worker {tally.worker / 3600:.0f} h,"
        print(
            f"             {hours}"
            f" batch {tally.batch / 3600:6.0f} h; pilots exited {sim.pilots_exited};"
            f" server demand served {served:6.1%} ({len(sim.servers)} servers);"
            f" {time.monotonic() - started:.0f} s real"
        )


if __name__ == "__main__":
    asyncio.run(main())
