"""Matching throughput: claims per second with 32 concurrent agents over 10,000 jobs.

Storage layer (this file): agents call ``Store.claim_job`` directly, on MariaDB and on SQLite;
every run checks from the database that no job was claimed twice. The HTTP figure
(``POST /v1/match`` through the API) plugs in as another :data:`SCENARIOS` entry: a function
``(url, jobs, agents) -> RunResult`` like :func:`run_storage`.

    .venv/bin/python benchmarks/match_throughput.py [--quick] [--runs N] [--backend mariadb|sqlite]

MariaDB: ``PODGRID_BENCH_MYSQL_URL`` (``mysql+aiomysql://user:pw@host:port``; a fresh database
is created and dropped) or, when unset, a throw-away ``mariadbd`` started like the test harness.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from podgrid.masterqueue.schema import job_events
from podgrid.masterqueue.store import Store
from podgrid.protocol import JobSpec, SlotDescription
from tests.harness.mariadb import MariaDB
from tests.harness.ports import free_port

TARGET_CLAIMS_PER_S = 1000


@dataclass(frozen=True)
class RunResult:
    """One measured run: how many claims, how long, and how many jobs were claimed twice."""

    claims: int
    seconds: float
    claimed_twice: int
    cpu_s: float = 0.0  # CPU time of this (client) process during the claims

    @property
    def per_s(self) -> float:
        return self.claims / self.seconds


def _slot(i: int) -> SlotDescription:
    return SlotDescription(
        agent_id=f"bench-{i}",
        site="CERN",
        cores=8,
        memory_mb=16000,
        ttl_s=86400,
        packages=("ROOT::v6-32",),
    )


def _specs(n: int) -> list[JobSpec]:
    return [
        JobSpec(command=["true"], priority=i % 5, packages=("ROOT::v6-32",) if i % 2 else ())
        for i in range(n)
    ]


async def _agent(store: Store, i: int) -> int:
    slot, claimed = _slot(i), 0
    while await store.claim_job(slot, lease_s=300) is not None:
        claimed += 1
    return claimed


async def run_storage(url: str, jobs: int, agents: int) -> RunResult:
    """Claims/s of ``agents`` concurrent claimers calling ``Store.claim_job`` until empty."""
    engines = 1 if url.startswith("sqlite") else 4  # MariaDB: 4 engines x 8 connections
    stores = [await Store.connect(url, pool_size=max(1, agents // engines)) for _ in range(engines)]
    try:
        await stores[0].migrate()
        await stores[0].submit_jobs("bench", _specs(jobs))
        start, cpu = time.perf_counter(), time.process_time()
        counts = await asyncio.gather(*(_agent(stores[i % engines], i) for i in range(agents)))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        async with stores[0].engine.connect() as conn:
            per_job = (
                sa.select(job_events.c.job_id)
                .where(job_events.c.state == "ASSIGNED")
                .group_by(job_events.c.job_id)
                .having(sa.func.count() > 1)
            )
            twice = len((await conn.execute(per_job)).all())
    finally:
        for store in stores:
            await store.close()
    return RunResult(sum(counts), seconds, twice, cpu)


Scenario = Callable[[str, int, int], Awaitable[RunResult]]
SCENARIOS: dict[str, Scenario] = {"storage": run_storage}


@contextmanager
def mariadb_server() -> Iterator[MariaDB]:
    """PODGRID_BENCH_MYSQL_URL's server, or a throw-away mariadbd in a temp datadir."""
    external = os.environ.get("PODGRID_BENCH_MYSQL_URL")
    if external:
        u = sa.engine.make_url(external)
        yield MariaDB(
            host=u.host or "127.0.0.1",
            port=u.port or 3306,
            user=u.username or "root",
            password=u.password if isinstance(u.password, str) else "",
            database="",
        )
        return
    tmp = Path(tempfile.mkdtemp(prefix="podgrid-bench-mariadb-"))
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={tmp / 'data'}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    db = MariaDB(
        host="127.0.0.1",
        port=free_port(),
        user="root",
        password="",
        database="",
        datadir=tmp / "data",
        socket=tmp / "mariadb.sock",
        _log=tmp / "mariadbd.log",
    )
    try:
        db.start()
        yield db
    finally:
        db.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _measure(name: str, url_for_run: Callable[[], str], args: argparse.Namespace) -> None:
    scenario = SCENARIOS[args.scenario]
    results = [await scenario(url_for_run(), args.jobs, args.agents) for _ in range(args.runs)]
    rates = [r.per_s for r in results]
    twice = sum(r.claimed_twice for r in results)
    claims = {r.claims for r in results}
    print(
        f"{args.scenario:8s} {name:8s} agents={args.agents} jobs={args.jobs} runs={args.runs} "
        f"claims/run={sorted(claims)} median={statistics.median(rates):,.0f} claims/s "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}) claimed_twice={twice} "
        f"client_cpu={statistics.median(r.cpu_s / r.seconds for r in results):.0%} "
        f"({statistics.median(r.cpu_s / r.claims * 1000 for r in results):.2f} ms/claim; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    if twice or claims != {args.jobs}:
        raise SystemExit(f"{name}: exactly-once violated: {results}")


def main() -> int:
    """Run the chosen scenario on the chosen backends and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, 1 run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--backend", choices=["mariadb", "sqlite", "both"], default="both")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="storage")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.runs = 2000, 1
    if args.backend in ("mariadb", "both"):
        with mariadb_server() as server:

            def mysql_url() -> str:
                return server.url(server.create_database(f"podgrid_bench_{secrets.token_hex(2)}"))

            asyncio.run(_measure("mariadb", mysql_url, args))
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="podgrid-bench-sqlite-") as tmp:

            def sqlite_url() -> str:
                return f"sqlite+aiosqlite:///{tmp}/bench-{secrets.token_hex(4)}.db"

            asyncio.run(_measure("sqlite", sqlite_url, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
