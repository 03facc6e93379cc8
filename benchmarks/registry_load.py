"""Registry load benchmark: ApMon ingest, REST query throughput, long-poll wake-up, memory.

Run: ``.venv/bin/python benchmarks/registry_load.py [--quick]``. The registry runs in its own
process (``run_registry`` on loopback, ports chosen by the kernel); the UDP sender and the
HTTP load generator run in further processes, so the registry's own core is what is measured.
Figures are printed (medians over repeats) next to the issue's targets; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from podgrid.config import setup_logging
from podgrid.monitoring.apmon_publisher import ApMonEncoder
from podgrid.monitoring.client import HttpPublisher, PublishItem, RegistryClient

# The process targets must be importable by spawned children, whatever the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.registry_procs import (
    HISTORY_POINTS,
    PARAMS_PER_DATAGRAM,
    TOKEN,
    RegistryProcess,
    rest_load,
    udp_sender,
)

TARGETS = {
    "ingest_params_per_s": 50_000,
    "rest_qps": 2_000,
    "rest_p99_ms": 50.0,
    "longpoll_p50_ms": 10.0,
    "bytes_per_series": 2048,
}


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run (full or --quick)."""

    repeats: int
    ingest_datagrams: int
    ingest_nodes: int
    rest_duration_s: float
    rest_concurrency: int
    longpoll_samples: int
    memory_series: int


FULL = Plan(3, 30_000, 1_000, 5.0, 64, 200, 10_000)
QUICK = Plan(1, 6_000, 1_000, 2.0, 64, 40, 2_000)


# --- ApMon ingest ---


def ingest_run(reg: RegistryProcess, plan: Plan, rate_per_s: float) -> tuple[float, int, int]:
    """One run: (params/s the registry took in, datagrams sent, datagrams it accepted)."""
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    sender = ctx.Process(
        target=udp_sender, args=(child, reg.udp_addr, plan.ingest_datagrams, plan.ingest_nodes)
    )
    sender.start()
    assert conn.recv() == "ready"

    def accepted() -> float:
        received = reg.counter("podgrid_registry_datagrams_received_total")
        return received - reg.counter("podgrid_registry_datagrams_dropped_total")

    before = accepted()
    conn.send(rate_per_s)
    started = time.perf_counter()
    last, last_change = before, started
    while time.perf_counter() - last_change < 0.5:  # until nothing more arrives for 0.5 s
        time.sleep(0.02)
        now = accepted()
        if now != last:
            last, last_change = now, time.perf_counter()
    conn.recv()
    sender.join()
    got = int(last - before)
    return got * PARAMS_PER_DATAGRAM / (last_change - started), plan.ingest_datagrams, got


# --- REST queries ---


def rest_run(reg: RegistryProcess, plan: Plan) -> tuple[float, float, float, int]:
    """One run: (queries/s, p50 ms, p99 ms, errors)."""
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    args = (child, reg.http_url, plan.rest_duration_s, plan.rest_concurrency, plan.ingest_nodes)
    load = ctx.Process(target=rest_load, args=args)
    load.start()
    qps, errors, latencies = conn.recv()
    load.join()
    return qps, percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3, errors


# --- long-poll -----------------------------------------------------------------------------


async def longpoll_run(reg: RegistryProcess, samples: int) -> list[float]:
    """Seconds from sending a datagram to the waiting client's answer, one per sample."""
    enc = ApMonEncoder()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    latencies: list[float] = []
    async with RegistryClient(reg.http_url) as client:
        query = "*/lp/server/NeededWorkers/1:"
        since = (await client.query(query)).now_ms
        for i in range(samples):
            waiter = asyncio.create_task(client.query(query, wait_s=10, since_ms=since))
            await asyncio.sleep(0.02)  # let the request reach the registry and park
            t0 = time.perf_counter()
            sock.sendto(enc.encode("lp", "server", {"NeededWorkers": i + 1})[0], reg.udp_addr)
            result = await waiter
            latencies.append(time.perf_counter() - t0)
            if [s.value for s in result] != [i + 1]:
                raise RuntimeError(f"long-poll answered {list(result)}, expected {i + 1}")
            since = result.now_ms
    sock.close()
    return latencies


# --- memory --------------------------------------------------------------------------------


async def fill(reg: RegistryProcess, cluster: str, series: int, points: int) -> None:
    """``series`` series (10 per node) with ``points`` history points each, over HTTP."""
    nodes = series // PARAMS_PER_DATAGRAM
    now_ms = int(time.time() * 1000)
    async with HttpPublisher(reg.http_url, TOKEN) as pub:
        for k in range(points):
            t_ms = now_ms - (points - k) * 1000
            batch = [
                PublishItem(
                    cluster,
                    f"node{n}",
                    {f"p{j}": n * 0.5 + j + k for j in range(PARAMS_PER_DATAGRAM)},
                    t_ms,
                )
                for n in range(nodes)
            ]
            for start in range(0, len(batch), 500):
                await pub.publish(batch[start : start + 500])


def memory_run(plan: Plan, state_dir: str) -> float:
    """Bytes of registry RSS per live series holding a full 60-point history."""
    with RegistryProcess(state_dir) as reg:
        asyncio.run(fill(reg, "warmup", 200, HISTORY_POINTS))  # code paths and arenas warm
        time.sleep(0.2)
        before = reg.rss_bytes
        asyncio.run(fill(reg, "mem", plan.memory_series, HISTORY_POINTS))
        time.sleep(0.2)
        grown = reg.rss_bytes - before
        series = int(reg.health()["series"]) - 200
        if series != plan.memory_series:
            raise RuntimeError(f"registry holds {series} series, expected {plan.memory_series}")
        return grown / series


def store_bytes_per_series(series: int) -> float:
    """Bytes per series of the registry's Store alone (tracemalloc, in this process)."""
    from podgrid.monitoring.store import Store

    store = Store(history_points=HISTORY_POINTS, series_ttl_s=300, max_series=series)
    now_ms = int(time.time() * 1000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(HISTORY_POINTS):
            t_ms = now_ms - (HISTORY_POINTS - k) * 1000
            for n in range(series // PARAMS_PER_DATAGRAM):
                values = [(f"p{j}", n * 0.5 + j + k) for j in range(PARAMS_PER_DATAGRAM)]
                store.put("bench", "mem", f"node{n}", values, t_ms)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return grown / len(store)


# --- report --------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def median_of(runs: Sequence[tuple[float, ...]], index: int) -> float:
    return statistics.median(r[index] for r in runs)


def row(name: str, value: str, target: str, ok: bool | None) -> str:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    return f"  {name:<62} {value:>18}   {target:<10} {verdict}".rstrip()


@dataclass(frozen=True)
class Figures:
    """What one benchmark run measured."""

    ingest: list[tuple[float, int, int]]  # per repeat: params/s, datagrams sent, accepted
    paced_rate_per_s: float
    paced: tuple[float, int, int]
    series_live: int
    rest: list[tuple[float, float, float, int]]  # per repeat: q/s, p50 ms, p99 ms, errors
    longpoll_s: list[float]
    rss_per_series_b: float
    store_per_series_b: float
    took_s: float
    load_before: float


def measure(plan: Plan) -> Figures:
    """Run every phase against registries in child processes."""
    state_dir = tempfile.mkdtemp(prefix="podgrid-bench-")
    timer = time.perf_counter()
    load_before = os.getloadavg()[0]
    with RegistryProcess(state_dir) as reg:
        ingest = [ingest_run(reg, plan, 0) for _ in range(plan.repeats)]
        paced_rate = 0.8 * median_of(ingest, 0) / PARAMS_PER_DATAGRAM
        paced = ingest_run(reg, plan, paced_rate)
        series_live = int(reg.health()["series"])
        rest = [rest_run(reg, plan) for _ in range(plan.repeats)]
        longpoll_s = asyncio.run(longpoll_run(reg, plan.longpoll_samples))
    rss = statistics.median(memory_run(plan, state_dir) for _ in range(plan.repeats))
    store = store_bytes_per_series(plan.memory_series)
    took_s = time.perf_counter() - timer
    return Figures(
        ingest, paced_rate, paced, series_live, rest, longpoll_s, rss, store, took_s, load_before
    )


def report(plan: Plan, f: Figures) -> list[str]:
    """The printed table: figure, measured value, target, verdict."""
    capacity = median_of(f.ingest, 0)
    sent, got = sum(r[1] for r in f.ingest), sum(r[2] for r in f.ingest)
    qps, p50, p99 = median_of(f.rest, 0), median_of(f.rest, 1), median_of(f.rest, 2)
    errors = sum(r[3] for r in f.rest)
    lp50, lp99 = percentile(f.longpoll_s, 50) * 1e3, percentile(f.longpoll_s, 99) * 1e3
    n: Callable[[float], str] = "{:,.0f}".format
    return [
        f"registry load benchmark ({'quick' if plan is QUICK else 'full'}; medians of "
        f"{plan.repeats}; {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{f.took_s:.0f} s; load average before {f.load_before:.1f})",
        row("figure", "measured", "target", None),
        row(
            f"ApMon ingest, params/s ({PARAMS_PER_DATAGRAM}/datagram, sent flat out)",
            n(capacity),
            "≥ 50,000",
            capacity >= TARGETS["ingest_params_per_s"],
        ),
        row("  datagrams lost when sent flat out", f"{sent - got:,} of {sent:,}", "-", None),
        row(
            f"  datagrams lost at 80% of that rate ({n(f.paced_rate_per_s)}/s)",
            f"{f.paced[1] - f.paced[2]:,} of {f.paced[1]:,}",
            "0",
            f.paced[1] == f.paced[2],
        ),
        row(
            f"REST queries/s ({plan.rest_concurrency} clients, {f.series_live:,} series)",
            n(qps),
            "≥ 2,000",
            qps >= TARGETS["rest_qps"],
        ),
        row("  REST latency p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f}", "p99 < 50", p99 < 50),
        row("  REST errors", str(errors), "0", errors == 0),
        row(
            f"long-poll wake-up p50 / p99 (ms, n={len(f.longpoll_s)})",
            f"{lp50:.2f} / {lp99:.2f}",
            "p50 < 10",
            lp50 < TARGETS["longpoll_p50_ms"],
        ),
        row(
            f"memory per live series, {HISTORY_POINTS} points (store, tracemalloc)",
            f"{n(f.store_per_series_b)} B",
            "< 2,048 B",
            f.store_per_series_b < TARGETS["bytes_per_series"],
        ),
        row(
            f"  same, registry process RSS delta ({plan.memory_series:,} series)",
            f"{n(f.rss_per_series_b)} B",
            "< 2,048 B",
            f.rss_per_series_b < TARGETS["bytes_per_series"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat (< 20 s)")
    args = parser.parse_args(argv)
    setup_logging("console", "ERROR")
    plan = QUICK if args.quick else FULL
    print("\n".join(report(plan, measure(plan))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
