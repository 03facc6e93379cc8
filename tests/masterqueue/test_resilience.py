"""A MariaDB restart in the middle of a stream of submissions loses and duplicates nothing."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from prometheus_client import REGISTRY

from podgrid.masterqueue.schema import jobs, requests
from podgrid.masterqueue.store import Store
from tests.harness.mariadb import MariaDB
from tests.masterqueue import factories as f

SUBMISSIONS = 240
SUBMITTERS = 6


def _db_retries() -> float:
    return REGISTRY.get_sample_value("podgrid_retry_attempts_total", {"kind": "db"}) or 0.0


async def _submit(store: Store, i: int) -> tuple[str, int]:
    if i % 2:
        req, text = f.request(name=f"req-{i}")
        rec = await store.submit_request("alice", req, text, idempotency_key=f"key-{i}")
        return "request", rec.id
    job = await store.submit_job("alice", f.job(command=["echo", str(i)]), f"key-{i}")
    return "job", job.id


async def test_restart_mid_stream_keeps_every_submission_exactly_once(mariadb: MariaDB) -> None:
    name = mariadb.create_database("podgrid_mq_restart")
    store = await Store.connect(mariadb.url(name), retry_deadline_s=90)
    created: dict[int, tuple[str, int]] = {}
    try:
        await store.migrate()
        retries_before = _db_retries()
        queue = iter(range(SUBMISSIONS))

        quarter_done = asyncio.Event()

        async def submitter() -> None:
            for i in queue:
                created[i] = await _submit(store, i)
                if len(created) >= SUBMISSIONS // 4:
                    quarter_done.set()
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(submitter()) for _ in range(SUBMITTERS)]
        await quarter_done.wait()
        before_restart = len(created)
        await asyncio.to_thread(mariadb.restart)
        await asyncio.gather(*tasks)
        again = [await _submit(store, i) for i in range(SUBMISSIONS)]  # every client retries
        async with store.engine.connect() as conn:
            n_requests = (
                await conn.execute(sa.select(sa.func.count()).select_from(requests))
            ).scalar_one()
            n_jobs = (await conn.execute(sa.select(sa.func.count()).select_from(jobs))).scalar_one()
            names = (await conn.execute(sa.select(requests.c.name))).scalars().all()
    finally:
        await store.close()
        mariadb.sql(f"DROP DATABASE IF EXISTS `{name}`")
    assert before_restart < SUBMISSIONS  # the restart really hit the middle of the stream
    assert _db_retries() > retries_before  # and the store had to retry through it
    assert len(created) == SUBMISSIONS
    assert again == [created[i] for i in range(SUBMISSIONS)]
    assert (n_requests, n_jobs) == (SUBMISSIONS // 2, SUBMISSIONS // 2)
    assert sorted(names) == sorted(f"req-{i}" for i in range(1, SUBMISSIONS, 2))
