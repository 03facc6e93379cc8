"""Matching through HTTP, and submit → broker started, for the master queue's API.

1. ``POST /v1/match`` throughput: a real ``podgrid masterqueue serve`` subprocess (so the
   server and the 32 agents use their own cores), 10,000 jobs inserted through the store, then
   32 concurrent agents (one aiohttp session, keep-alive) call ``/v1/match`` until 204. Every
   run checks from the database that no job was claimed twice (one ASSIGNED event per job).
   Target: >= 300 matches/s on MariaDB; SQLite reported.
2. Submit → broker started: an in-process master queue with the local launcher running the
   test fake broker; per request, the time from ``POST /v1/requests`` to STARTING (the
   launcher claimed it and is spawning the broker) and to the broker's first state report
   (the broker process is up and talking to the API). p50 reported; target < 1 s.

    .venv/bin/python benchmarks/match_http.py [--quick] [--runs N] [--backend mariadb|sqlite|both]

Plugs into ``benchmarks/match_throughput.py`` as ``SCENARIOS["http"] = run_http``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.match_throughput import RunResult, _specs, mariadb_server
from podgrid.config.logs import setup_logging
from podgrid.masterqueue.schema import job_events
from podgrid.masterqueue.service import run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.masterqueue.store import Store
from tests.harness.ports import free_port

TARGET_MATCHES_PER_S = 300
TARGET_START_P50_S = 1.0
FAKE_BROKER = Path(__file__).resolve().parent.parent / "tests" / "masterqueue" / "fake_broker.py"
SLOT = {
    "site": "CERN",
    "cores": 8,
    "memory_mb": 16000,
    "ttl_s": 86400,
    "packages": ["ROOT::v6-32"],
}


@contextlib.asynccontextmanager
async def served(db_url: str, state_dir: Path) -> AsyncIterator[tuple[str, str]]:
    """A ``podgrid masterqueue serve`` subprocess on ``db_url``: (url, admin token)."""
    port = free_port()
    argv = [sys.executable, "-m", "podgrid", "masterqueue", "serve", "--launcher", "none"]
    argv += ["--http", f"127.0.0.1:{port}", "--db", db_url, "--state-dir", str(state_dir)]
    argv += [
        "--registry-url",
        "http://127.0.0.1:9",
        "--db-pool-size",
        os.environ.get("PODGRID_BENCH_POOL", "10"),
    ]
    log = (state_dir / "serve.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited: {(state_dir / 'serve.log').read_text()}")
                await asyncio.sleep(0.05)
        yield url, (state_dir / "admin.token").read_text().strip()
    except SystemExit:
        print((state_dir / "serve.log").read_text()[-6000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


async def _agent(session: aiohttp.ClientSession, url: str, token: str, i: int) -> int:
    body, headers, claimed = (
        {**SLOT, "agent_id": f"bench-{i}"},
        {"Authorization": f"Bearer {token}"},
        0,
    )
    while True:
        async with session.post(f"{url}/v1/match", json=body, headers=headers) as resp:
            if resp.status == 204:
                return claimed
            if resp.status != 200:
                raise SystemExit(f"match failed: {resp.status} {await resp.text()}")
            await resp.read()
            claimed += 1


async def run_http(db_url: str, jobs: int, agents: int) -> RunResult:
    """Matches/s of ``agents`` concurrent agents calling ``POST /v1/match`` until 204."""
    store = await Store.connect(db_url)
    try:
        await store.migrate()
        await store.submit_jobs("bench", _specs(jobs))
        with tempfile.TemporaryDirectory(prefix="podgrid-bench-http-") as tmp:
            async with served(db_url, Path(tmp)) as (url, admin):
                connector = aiohttp.TCPConnector(limit=agents * 2)
                async with aiohttp.ClientSession(connector=connector) as session:
                    async with session.post(
                        f"{url}/v1/tokens",
                        json={"role": "agent", "name": "bench"},
                        headers={"Authorization": f"Bearer {admin}"},
                    ) as resp:
                        token = (await resp.json())["token"]
                    start, cpu = time.perf_counter(), time.process_time()
                    counts = await asyncio.gather(
                        *(_agent(session, url, token, i) for i in range(agents))
                    )
                    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        async with store.engine.connect() as conn:
            per_job = (
                sa.select(job_events.c.job_id)
                .where(job_events.c.state == "ASSIGNED")
                .group_by(job_events.c.job_id)
                .having(sa.func.count() > 1)
            )
            twice = len((await conn.execute(per_job)).all())
    finally:
        await store.close()
    return RunResult(sum(counts), seconds, twice, cpu)


async def _wait(
    session: aiohttp.ClientSession, url: str, token: str, rid: int, done: set[str]
) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        async with session.get(f"{url}/v1/requests/{rid}", headers=headers) as resp:
            if (await resp.json())["state"] in done:
                return time.perf_counter()
        await asyncio.sleep(0.002)


async def submit_to_broker(requests: int) -> tuple[list[float], list[float]]:
    """Per request: (seconds to broker spawned, seconds to the broker's first report)."""
    spawned, reported = [], []
    with tempfile.TemporaryDirectory(prefix="podgrid-bench-launch-") as tmp:
        settings = MasterQueueSettings(
            http_port=0,
            state_dir=Path(tmp),
            registry_url="http://127.0.0.1:9",
            broker_command=[sys.executable, str(FAKE_BROKER)],
            broker_stop_grace_s=0.2,
            stop_brokers_on_exit=True,
        )
        async with run_masterqueue(settings) as mq, aiohttp.ClientSession() as session:
            admin = {"Authorization": f"Bearer {mq.admin_token}"}
            async with session.post(
                f"{mq.url}/v1/tokens", json={"role": "user", "name": "bench"}, headers=admin
            ) as resp:
                token = (await resp.json())["token"]
            user = {"Authorization": f"Bearer {token}", "Content-Type": "application/toml"}
            for i in range(requests):
                text = f'[server]\nname = "b{i}"\nmin_workers = 1\nmax_workers = 2\n'
                start = time.perf_counter()
                async with session.post(f"{mq.url}/v1/requests", data=text, headers=user) as r:
                    rid = (await r.json())["id"]
                up = await _wait(
                    session, mq.url, token, rid, {"STARTING", "PUBLISHING", "READY", "FULL"}
                )
                first = await _wait(session, mq.url, token, rid, {"PUBLISHING", "READY", "FULL"})
                spawned.append(up - start)
                reported.append(first - start)
                await session.delete(f"{mq.url}/v1/requests/{rid}", headers=user)
    return spawned, reported


async def _measure(name: str, url_for_run: object, args: argparse.Namespace) -> bool:
    assert callable(url_for_run)
    results = [await run_http(url_for_run(), args.jobs, args.agents) for _ in range(args.runs)]
    rates = [r.per_s for r in results]
    twice = sum(r.claimed_twice for r in results)
    claims = {r.claims for r in results}
    median = statistics.median(rates)
    print(
        f"http     {name:8s} agents={args.agents} jobs={args.jobs} runs={args.runs} "
        f"matches/run={sorted(claims)} median={median:,.0f} matches/s "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}) claimed_twice={twice}",
        flush=True,
    )
    if twice or claims != {args.jobs}:
        raise SystemExit(f"{name}: exactly-once violated: {results}")
    return median >= TARGET_MATCHES_PER_S


def main() -> int:
    """Run the HTTP scenarios and print medians / p50."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1 run, 10 launches")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--launches", type=int, default=30)
    parser.add_argument("--backend", choices=["mariadb", "sqlite", "both"], default="both")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.runs, args.launches = 2000, 1, 10
    setup_logging("json", "WARNING")
    if args.backend in ("mariadb", "both"):
        with mariadb_server() as server:

            def mysql_url() -> str:
                return server.url(server.create_database(f"podgrid_bench_{secrets.token_hex(2)}"))

            ok = asyncio.run(_measure("mariadb", mysql_url, args))
            print(
                f"http     mariadb target >= {TARGET_MATCHES_PER_S}/s: {'met' if ok else 'MISSED'}"
            )
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="podgrid-bench-sqlite-") as tmp:

            def sqlite_url() -> str:
                return f"sqlite+aiosqlite:///{tmp}/bench-{secrets.token_hex(4)}.db"

            asyncio.run(_measure("sqlite", sqlite_url, args))
    spawned, reported = asyncio.run(submit_to_broker(args.launches))
    print(
        f"launch   local    n={args.launches} submit->STARTING p50="
        f"{statistics.median(spawned) * 1000:.0f} ms (max {max(spawned) * 1000:.0f} ms); "
        f"submit->first broker report p50={statistics.median(reported) * 1000:.0f} ms "
        f"(target p50 < {TARGET_START_P50_S * 1000:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
