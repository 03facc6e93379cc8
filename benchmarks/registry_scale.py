"""Registry scale benchmark: thousands of parked long-polls, one publish, how fast all hear of it.

Run: ``.venv/bin/python benchmarks/registry_scale.py`` (``--quick`` for a small run;
``--sizes 1000,5000,10000`` for the one-registry table; ``--registries K --agents N`` for the
multi-registry simulation). Registries run in their own processes (``run_registry`` on
loopback); simulated agents (``registry_agents.py``: one coroutine and one real keep-alive
HTTP connection each) run in a few more processes, spread over the registries. One round:
every agent parks ``?wait=60&since=now`` on the agents' query; one ApMon datagram announcing a
new server goes to every registry (as a broker publishes to every registry of its list);
wake = datagram sent → that agent's answer read (one CLOCK_MONOTONIC across processes).
An agent whose answer does not name the new server is a lost wake-up. Then every agent
re-parks at once (the burst that follows a real wake). Registry CPU is the process's user +
system time over the wake (or the burst), until it is idle again, divided by its waiters.
Figures are printed with the command that reproduces them; nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from podgrid.config import setup_logging
from podgrid.monitoring.apmon_publisher import ApMonEncoder
from podgrid.monitoring.capacity import Capacity, raise_fd_limit
from podgrid.protocol import MASTERS_CLUSTER, MasterParam

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.registry_agents import swarm_main
from benchmarks.registry_procs import RegistryProcess

AGENTS_PER_PROCESS = 15_000  # well inside one process's fd limit
MIN_AGENT_PROCESSES = 2
WAKE_TIMEOUT_S = 30.0
IDLE_CPU_S = 0.002  # a registry using less than this per 0.1 s is idle again
TARGET_P99_MS = 200.0
TARGET_CPU_US = 20.0
GRID_AGENTS = 100_000
WAITERS_GAUGE = "podgrid_registry_longpoll_waiters"


@dataclass
class Round:
    """One wake and the re-park burst after it, over all registries."""

    wake_ms: list[float]
    lost: int
    refused: int
    wake_cpu_us: float  # per woken waiter, summed over the registries
    repark_s: float  # burst start → every waiter parked again
    repark_cpu_us: float  # per re-parked waiter
    write_ms: float  # registry side: update → last answer written (max over registries)


@dataclass
class Result:
    """Every round of one (registries, agents) configuration."""

    registries: int
    agents: int
    rounds: list[Round] = field(default_factory=list)
    rss_mb: float = 0.0

    def wake_ms(self) -> list[float]:
        return [ms for r in self.rounds for ms in r.wake_ms]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Swarms:
    """The agent processes of one configuration."""

    def __init__(self, urls: list[str], agents: int) -> None:
        ctx = mp.get_context("spawn")
        count = max(MIN_AGENT_PROCESSES, math.ceil(agents / AGENTS_PER_PROCESS))
        shares = [agents // count + (1 if i < agents % count else 0) for i in range(count)]
        self.procs: list[tuple[mp.process.BaseProcess, object]] = []
        first = 0
        for share in shares:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=swarm_main, args=(child, urls, first, share), daemon=True)
            proc.start()
            self.procs.append((proc, parent))
            first += share

    def ask(self, command: str, arg: object = None) -> list[object]:
        for _, conn in self.procs:
            conn.send((command, arg))  # type: ignore[attr-defined]
        return [conn.recv() for _, conn in self.procs]  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.ask("close")
        for proc, _ in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def wait_parked(registries: list[RegistryProcess], shares: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            counts = [int(r.gauge(WAITERS_GAUGE)) for r in registries]
        except OSError:  # a registry too busy parking to answer /metrics in time: ask again
            counts = []
        if counts == shares:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"waiters parked {counts}, expected {shares}")
        time.sleep(0.02)


def cpu_until_idle(registries: list[RegistryProcess], before: list[float]) -> float:
    """CPU seconds the registries used since ``before``, once all are idle again."""
    last = [r.cpu_s for r in registries]
    while True:
        time.sleep(0.1)
        now = [r.cpu_s for r in registries]
        if all(n - p < IDLE_CPU_S for n, p in zip(now, last, strict=True)):
            return sum(n - b for n, b in zip(now, before, strict=True))
        last = now


def one_round(
    registries: list[RegistryProcess], swarms: Swarms, shares: list[int], server: str
) -> Round:
    """Wake every parked agent with one new server, then let them all re-park."""
    enc = ApMonEncoder()
    datagram = enc.encode(MASTERS_CLUSTER, server, {MasterParam.NEEDED_WORKERS: 4})[0]
    agents = sum(shares)
    wake_sums = [r.counter("podgrid_registry_wake_seconds_sum") for r in registries]
    before = [r.cpu_s for r in registries]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sent = time.monotonic()
        for reg in registries:  # a broker publishes to every registry of its list
            sock.sendto(datagram, reg.udp_addr)
    answers = swarms.ask("collect", (server, WAKE_TIMEOUT_S))
    wake_cpu = cpu_until_idle(registries, before)
    write_s = max(
        r.counter("podgrid_registry_wake_seconds_sum") - b
        for r, b in zip(registries, wake_sums, strict=True)
    )
    wake_ms: list[float] = []
    lost = refused = 0
    for times, lost_here, refused_here in answers:  # type: ignore[misc]
        wake_ms += [(t - sent) * 1e3 for t in times]
        lost += lost_here
        refused += refused_here
    before = [r.cpu_s for r in registries]
    started = time.monotonic()
    swarms.ask("park")
    wait_parked(registries, shares, max(WAKE_TIMEOUT_S, agents / 500))
    repark_s = time.monotonic() - started
    repark_cpu = cpu_until_idle(registries, before)
    return Round(
        wake_ms,
        lost,
        refused,
        wake_cpu / agents * 1e6,
        repark_s,
        repark_cpu / agents * 1e6,
        write_s * 1e3,
    )


def measure(registries_n: int, agents: int, rounds: int, state_dir: str) -> Result:
    """Start the registries and agents of one configuration and run its rounds."""
    result = Result(registries_n, agents)
    shares = [len(range(i, agents, registries_n)) for i in range(registries_n)]  # i mod K
    regs = [
        RegistryProcess(state_dir, max_waiters=max(shares) + 1000, max_wait_s=120)
        for _ in range(registries_n)
    ]
    for reg in regs:
        reg.__enter__()
    swarms: Swarms | None = None
    try:
        swarms = Swarms([r.http_url for r in regs], agents)
        swarms.ask("connect")
        swarms.ask("park")
        wait_parked(regs, shares, max(60.0, agents / 500))
        for k in range(rounds):
            result.rounds.append(one_round(regs, swarms, shares, f"bench-{agents}-{k}"))
        result.rss_mb = statistics.mean(r.rss_bytes for r in regs) / 2**20
    finally:
        if swarms is not None:
            swarms.stop()
        for reg in regs:
            reg.__exit__(None, None, None)
    return result


def row(result: Result) -> str:
    wake = result.wake_ms()
    within = sum(1 for ms in wake if ms <= 1000)
    lost = sum(r.lost for r in result.rounds)
    refused = sum(r.refused for r in result.rounds)
    cpu = statistics.median(r.wake_cpu_us for r in result.rounds)
    repark = statistics.median(r.repark_s for r in result.rounds)
    repark_cpu = statistics.median(r.repark_cpu_us for r in result.rounds)
    total = result.agents * len(result.rounds)
    write = statistics.median(r.write_ms for r in result.rounds)
    return (
        f"| {result.registries} | {result.agents:,} | {percentile(wake, 50):.0f} ms "
        f"| {percentile(wake, 99):.0f} ms | {write:.0f} ms | {within / total:.1%} | {lost} "
        f"| {refused} "
        f"| {cpu:.1f} µs | {repark * 1e3:.0f} ms | {repark_cpu:.1f} µs "
        f"| {result.rss_mb:.0f} MB |"
    )


HEADER = (
    "| registries | parked agents | wake p50 | wake p99 | last answer written "
    "| woke within 1 s | lost wake-ups "
    "| 503 | registry CPU / waiter (wake) | re-park burst | registry CPU / agent (re-park) "
    "| RSS / registry |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def extrapolate(results: list[Result], fd_budget: int) -> list[str]:
    """How many registries 100,000 agents need, from the measured one-process wake."""
    single = [r for r in results if r.registries == 1]
    if not single:
        return []
    biggest = max(single, key=lambda r: r.agents)
    cpu_us = statistics.median(x.wake_cpu_us for x in biggest.rounds)
    p99_ms = percentile(biggest.wake_ms(), 99)
    # A wake is one write per waiter in one loop: its span grows linearly with the waiters
    # of one process. Two bounds: the measured p99 (this box's cores shared with the agents
    # and anything else running), and the registry's own CPU per waiter (a core of its own).
    by_p99 = min(biggest.agents * TARGET_P99_MS / p99_ms, float(fd_budget))
    by_cpu = min(TARGET_P99_MS * 1e3 / cpu_us, float(fd_budget))
    fewest, most = sorted(math.ceil(GRID_AGENTS / bound) for bound in (by_p99, by_cpu))
    lines = [
        f"Extrapolation from the {biggest.agents:,}-agent row (p99 {p99_ms:.0f} ms, "
        f"{cpu_us:.1f} µs of registry CPU per waiter): one registry process keeps p99 under "
        f"{TARGET_P99_MS:.0f} ms for ≈ {by_p99:,.0f} parked agents by the p99 measured here, "
        f"≈ {by_cpu:,.0f} by its CPU per waiter on a core of its own (fd budget: "
        f"{fd_budget:,}); {GRID_AGENTS:,} agents need {fewest} to {most} registry processes, "
        f"one core each, every agent parked on one of them; one wake of all {GRID_AGENTS:,} "
        f"costs ≈ {GRID_AGENTS * cpu_us / 1e6:.1f} core-seconds in total."
    ]
    multi = [r for r in results if r.registries > 1]
    for r in multi:
        lines.append(
            f"Measured: {r.agents:,} agents over {r.registries} registry processes sharing "
            f"this machine's {os.cpu_count()} cores: p99 {percentile(r.wake_ms(), 99):.0f} ms, "
            f"{sum(x.lost for x in r.rounds)} lost wake-ups."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1k and 2k agents, 2 rounds")
    parser.add_argument("--sizes", default="1000,5000,10000", help="agents on one registry")
    parser.add_argument("--registries", type=int, default=4, help="K for the multi run")
    parser.add_argument("--agents", type=int, default=40_000, help="N for the multi run (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    setup_logging("console", "ERROR")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rounds, multi = args.rounds, args.agents
    if args.quick:
        sizes, rounds, multi = [1000, 2000], 2, 4000
    command = "python benchmarks/registry_scale.py " + " ".join(argv or sys.argv[1:])
    state_dir = tempfile.mkdtemp(prefix="podgrid-scale-")
    fd_limit = raise_fd_limit().soft  # what each registry process will raise its own to
    started = time.monotonic()
    load = os.getloadavg()[0]
    print(
        f"registry scale benchmark: `{command.strip()}` ({os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {rounds} rounds per row, load average before "
        f"{load:.1f}; targets: p99 < {TARGET_P99_MS:.0f} ms at 10k, ≤ {TARGET_CPU_US:.0f} µs "
        "CPU per waiter, 0 lost)"
    )
    print(HEADER, flush=True)
    plan = [(1, n) for n in sizes]
    if multi and args.registries > 1:
        plan.append((args.registries, multi))
    results = []
    for registries, agents in plan:
        results.append(measure(registries, agents, rounds, state_dir))
        print(row(results[-1]), flush=True)
    for line in extrapolate(results, Capacity.derive(fd_limit, None, None).fd_budget):
        print(line)
    print(f"({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
