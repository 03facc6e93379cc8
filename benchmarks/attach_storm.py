"""Attach storm and broker start-up benchmark (figures printed, nothing asserted).

Run: ``.venv/bin/python benchmarks/attach_storm.py [--quick]``. The registry and the master
queue (SQLite, no launcher) run in this process; each broker is a real ``podgrid broker
serve`` process, so the load generator (this process) and the broker do not share a core's
event loop. Measured:

- storm: N concurrent ``POST /v1/attach`` (distinct agents) for P places → granted count
  (must be exactly P), wall time, per-call latency p50/p99 under the storm;
- handshake: one attach at a time (the latency an agent sees on a quiet broker), p50/p99;
- start-up: broker process spawned → first ``PoD_Masters`` value visible in the registry,
  and the broker's own start-up (``broker.started took_s``: app start → publishing), p50.
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
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from podgrid.config import set_testing, setup_logging
from podgrid.jobagent.attach import BrokerPass
from podgrid.jobagent.vouch import Vouchers
from podgrid.masterqueue import keys as mq_keys
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.service import RunningMasterQueue, run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.masterqueue.signing import load_sign_key, sign_secret
from podgrid.monitoring.client import RegistryClient
from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from podgrid.protocol.csr import csr_for, new_private_key


def request_toml(places: int) -> str:
    """A request with ``places`` small workers."""
    return (
        f'[server]\nname = "storm"\nmin_workers = 1\nmax_workers = {places}\n'
        '[worker]\ncores = 1\nmemory = "256MiB"\n'
    )


# One key and CSR for every simulated agent: the broker's side (checking the CSR, signing a
# certificate for the reserved name) is what is measured; a real agent makes its own key.
CSR = csr_for(new_private_key())


def slot(agent_id: str) -> dict[str, Any]:
    """A slot (with a CSR) that fits every benchmark request."""
    return {
        "agent_id": agent_id,
        "site": "Bench",
        "host": "127.0.0.1",
        "cores": 2,
        "memory_mb": 1024,
        "ttl_s": 3600,
        "packages": [],
        "csr": CSR,
    }


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` in ms."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    """Registry, master queue, tokens, and broker processes started against them."""

    def __init__(self, registry: RunningRegistry, mq: RunningMasterQueue, tmp: Path) -> None:
        self.registry, self.mq, self.tmp = registry, mq, tmp
        self.user = self.agent = ""
        self.procs: list[asyncio.subprocess.Process] = []

    async def tokens(self) -> None:
        """Create the user and agent tokens."""
        self.user = await self.mq.store.create_token("user", "bench")
        self.agent = await self.mq.store.create_token("agent", "bench-agent")

    async def broker(self, places: int) -> tuple[int, str, float, Path]:
        """Submit, start a broker process; (id, attach URL, spawn→visible s, log path)."""
        async with MasterQueueClient(self.mq.url, self.user) as client:
            record = await client.submit_request(request_toml(places), "toml")
        token = await self.mq.store.create_token("broker", f"b{record.id}", record.id)
        host, port = self.registry.udp_addr
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRID_")}
        env["PODGRID_TOKEN"] = token
        key = load_sign_key(self.mq.app[mq_keys.SETTINGS].sign_key_path)
        env["PODGRID_SIGN_SECRET"] = sign_secret(key, record.id)  # as the launcher does
        argv = [
            sys.executable,
            "-m",
            "podgrid",
            "broker",
            "serve",
            "--request-id",
            str(record.id),
            "--masterqueue",
            self.mq.url,
            "--registry",
            f"udp://{host}:{port}",
            "--state-dir",
            str(self.tmp / "state"),
            "--publish-interval",
            "0.2",
        ]
        log_path = self.tmp / f"broker-{record.id}.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        async with RegistryClient(self.registry.http_url) as reg:
            while True:
                found = await reg.query(["*", "PoD_Masters", str(record.id), "Address"])
                if found:
                    return record.id, str(found[-1].value), time.monotonic() - started, log_path
                if proc.returncode is not None:
                    raise RuntimeError(f"broker exited: {log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.005)

    async def broker_pass(self, request_id: int, url: str) -> BrokerPass:
        """The pass an agent gets from the master queue: a ticket, the broker CA and name."""
        async with MasterQueueClient(self.mq.url, self.agent) as client:
            vouchers = Vouchers(client, refresh_min_s=0.01)
            for _ in range(1000):  # until the broker's first report reached the queue
                if (found := await vouchers.genuine(str(request_id), url)) is not None:
                    return found
                await asyncio.sleep(0.01)
        raise RuntimeError(f"the master queue never vouched for broker {request_id}")

    async def stop_brokers(self) -> None:
        """SIGTERM every broker process and wait for it."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            await proc.wait()


async def attach(
    session: aiohttp.ClientSession, url: str, broker: BrokerPass, agent: str
) -> tuple[int, float]:
    """One attach; (status, seconds)."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {broker.ticket}"}
    async with session.post(
        f"{url}/v1/attach",
        json=slot(agent),
        headers=headers,
        ssl=broker.context,
        server_hostname=broker.server_name,
    ) as resp:
        await resp.read()
        return resp.status, time.perf_counter() - started


async def storm(bench: Bench, calls: int, places: int) -> None:
    """N concurrent attaches for P places."""
    rid, url, _, _ = await bench.broker(places)
    broker = await bench.broker_pass(rid, url)
    connector = aiohttp.TCPConnector(limit=calls)
    async with aiohttp.ClientSession(connector=connector) as session:
        await attach(session, url, broker, "warm-up")  # a TLS connection up
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(attach(session, url, broker, f"agent-{i}") for i in range(calls))
        )
        wall_s = time.perf_counter() - started
    granted = sum(1 for status, _ in answers if status == 200) + 1  # + the warm-up's place
    latencies = [s for _, s in answers]
    refused = sum(1 for status, _ in answers if status == 409)
    verdict = "exact" if granted == places else "WRONG"
    print(
        f"storm: {calls} concurrent attaches for {places} places -> {granted} granted "
        f"({verdict}), {refused} refused 409, wall {wall_s:.3f} s, latency under storm "
        f"p50 {pct(latencies, 0.5):.1f} ms p99 {pct(latencies, 0.99):.1f} ms"
    )


async def handshake(bench: Bench, n: int) -> None:
    """One attach at a time: the latency an agent sees."""
    rid, url, _, _ = await bench.broker(n + 1)
    broker = await bench.broker_pass(rid, url)
    async with aiohttp.ClientSession() as session:
        await attach(session, url, broker, "warm-up")
        times = []
        for i in range(n):
            status, seconds = await attach(session, url, broker, f"hs-{i}")
            assert status == 200, status
            times.append(seconds)
    print(
        f"handshake (sequential, {n} grants, each with a fresh EC worker certificate): "
        f"p50 {pct(times, 0.5):.2f} ms p99 {pct(times, 0.99):.2f} ms (target p50 < 20 ms)"
    )


def took_s(log_path: Path) -> float | None:
    """``took_s`` of the broker's ``broker.started`` log line."""
    for line in log_path.read_text().splitlines():
        if '"broker.started"' in line:
            return float(json.loads(line)["took_s"])
    return None


async def startup(bench: Bench, repeats: int) -> None:
    """Broker process spawned → first publication visible, and in-process start-up."""
    spawn, inner = [], []
    for _ in range(repeats):
        _, _, seconds, log_path = await bench.broker(4)
        spawn.append(seconds)
        await bench.stop_brokers()
        inner.append(took_s(log_path) or float("nan"))
    print(
        f"start-up over {repeats} runs: process spawn -> first publish visible p50 "
        f"{statistics.median(spawn):.3f} s (max {max(spawn):.3f}); broker app start -> "
        f"publishing p50 {statistics.median(inner) * 1000:.0f} ms (target < 1 s)"
    )


async def main(quick: bool) -> None:
    """Run every measurement once, printing as it goes."""
    set_testing(True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reg_settings = RegistrySettings(http_port=0, udp_port=0, state_dir=tmp / "reg")
        async with run_registry(reg_settings) as registry:
            mq_settings = MasterQueueSettings(
                http_port=0, state_dir=tmp / "mq", launcher="none", registry_url=registry.http_url
            )
            async with run_masterqueue(mq_settings) as mq:
                bench = Bench(registry, mq, tmp)
                await bench.tokens()
                try:
                    await storm(bench, 200 if quick else 1000, 20 if quick else 100)
                    await handshake(bench, 50 if quick else 200)
                    await startup(bench, 2 if quick else 5)
                finally:
                    await bench.stop_brokers()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers, for a smoke run")
    setup_logging("console", "ERROR")
    asyncio.run(main(parser.parse_args().quick))
