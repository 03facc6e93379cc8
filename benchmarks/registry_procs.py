"""The processes of the registry benchmark: the registry itself, a UDP sender, an HTTP load.

Each runs in its own (spawned) process so that the registry's one core is what is measured.
Targets are module-level functions so that ``multiprocessing``'s spawn start method can
import them.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import socket
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from podgrid.config import setup_logging
from podgrid.monitoring.apmon_publisher import ApMonEncoder

TOKEN = "bench-token"
PARAMS_PER_DATAGRAM = 10
HISTORY_POINTS = 60


def _registry_main(conn: Connection, state_dir: str, overrides: dict[str, Any]) -> None:
    from podgrid.monitoring.service import run_registry
    from podgrid.monitoring.settings import RegistrySettings

    setup_logging("json", "ERROR")
    settings = RegistrySettings(
        farm="bench",
        http_port=0,
        udp_port=0,
        publish_tokens=frozenset({TOKEN}),
        history_points=HISTORY_POINTS,
        max_series=200_000,
        max_wait_s=30,
        state_dir=Path(state_dir),
    ).model_copy(update=overrides)

    async def serve() -> None:
        async with run_registry(settings) as reg:
            conn.send((reg.http_url, reg.udp_addr))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(serve())


class RegistryProcess:
    """The registry in a child process; ``with`` starts it and stops it."""

    def __init__(self, state_dir: str, **overrides: Any) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_registry_main, args=(child, state_dir, overrides), daemon=True
        )

    def __enter__(self) -> RegistryProcess:
        self.proc.start()
        if not self._conn.poll(30):
            raise RuntimeError("the registry process did not start within 30 s")
        self.http_url, self.udp_addr = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    @property
    def cpu_s(self) -> float:
        """CPU seconds the registry process has run so far, all threads, to the nanosecond.

        ``/proc/<pid>/task/*/schedstat`` (time on CPU, ns) rather than ``cpu_times()``, whose
        10 ms ticks are too coarse to split over a thousand waiters.
        """
        total_ns = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                total_ns += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just ended
        return total_ns / 1e9

    def gauge(self, name: str) -> float:
        """A gauge's value (summed over labels) in the registry's /metrics."""
        return self.counter(name)

    @property
    def rss_bytes(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def counter(self, name: str) -> float:
        """Sum of a counter's samples (all labels) in the registry's /metrics."""
        with urllib.request.urlopen(self.http_url + "/metrics", timeout=30) as resp:
            text = resp.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        )

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http_url + "/healthz", timeout=10) as resp:
            return dict(json.loads(resp.read()))


def udp_sender(conn: Connection, addr: tuple[str, int], count: int, nodes: int) -> None:
    """Encode ``count`` datagrams, wait for "go" (with a rate, 0 = flat out), send, report."""
    enc = ApMonEncoder()
    datagrams = [
        enc.encode(
            "bench",
            f"node{i % nodes}",
            {f"p{j}": (i + j if j % 2 else (i + j) / 7) for j in range(PARAMS_PER_DATAGRAM)},
        )[0]
        for i in range(count)
    ]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect(addr)
    conn.send("ready")
    rate_per_s: float = conn.recv()
    burst = 50
    started = time.perf_counter()
    for k in range(0, count, burst):
        for d in datagrams[k : k + burst]:
            sock.send(d)
        if rate_per_s:
            delay = started + (k + burst) / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    conn.send(time.perf_counter() - started)
    sock.close()


def rest_load(conn: Connection, url: str, seconds: float, concurrency: int, nodes: int) -> None:
    async def main() -> tuple[int, int, list[float]]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal errors
                rnd = random.Random()
                while time.perf_counter() < deadline:
                    path = (
                        f"{url}/rest/*/bench/node{rnd.randrange(nodes)}/*?Accept=application/json"
                    )
                    t0 = time.perf_counter()
                    async with session.get(path) as resp:
                        body = await resp.read()
                    latencies.append(time.perf_counter() - t0)
                    if resp.status != 200 or b'"results":[{' not in body:
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(latencies), errors, latencies

    started = time.perf_counter()
    count, errors, latencies = asyncio.run(main())
    conn.send((count / (time.perf_counter() - started), errors, latencies))
