"""Exactly-once under real concurrency: many claimers on several engines, parallel sweeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from podgrid.masterqueue.schema import job_events, jobs, request_events
from podgrid.masterqueue.store import Store
from podgrid.protocol import Claim
from podgrid.protocol import JobState as J
from podgrid.protocol import RequestState as S
from tests.masterqueue import factories as f

JOBS = 2000
AGENTS = 32


async def _agent(store: Store, name: str) -> list[int]:
    """Claim and finish jobs until none is left; the ids this agent finished."""
    finished: list[int] = []
    while True:
        claim: Claim | None = await store.claim_job(f.slot(name), lease_s=120)
        if claim is None:
            if not await store.list_jobs(states=[J.WAITING], limit=1):
                return finished
            await asyncio.sleep(0.01)  # rows locked by others: look again
            continue
        done = await store.finish_job(claim.job.id, claim.lease_token, 0)
        assert done.agent_id == name
        finished.append(claim.job.id)


async def _stores(url: str, n: int) -> list[Store]:
    return [await Store.connect(url, pool_size=AGENTS // n + 1) for _ in range(n)]


async def test_32_agents_drain_2000_jobs_each_done_exactly_once(db_url: str) -> None:
    engines = 1 if db_url.startswith("sqlite") else 4  # SQLite: one writer anyway
    stores = await _stores(db_url, engines)
    try:
        await stores[0].migrate()
        ids = await stores[0].submit_jobs("alice", [f.job(priority=i % 3) for i in range(JOBS)])
        per_agent = await asyncio.gather(
            *(_agent(stores[i % engines], f"agent-{i}") for i in range(AGENTS))
        )
        async with stores[0].engine.connect() as conn:
            by_state = dict(
                (
                    await conn.execute(
                        sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
                    )
                ).all()
            )
            events = dict(
                (
                    await conn.execute(
                        sa.select(job_events.c.state, sa.func.count()).group_by(job_events.c.state)
                    )
                ).all()
            )
            doubles = (
                await conn.execute(
                    sa.select(job_events.c.job_id)
                    .where(job_events.c.state.in_([J.ASSIGNED.value, J.DONE.value]))
                    .group_by(job_events.c.job_id, job_events.c.state)
                    .having(sa.func.count() > 1)
                )
            ).all()
    finally:
        for s in stores:
            await s.close()
    finished = [job_id for ids_ in per_agent for job_id in ids_]
    assert sorted(finished) == sorted(ids)  # every job, none twice
    assert sum(1 for ids_ in per_agent if ids_) > 1  # the work really was shared
    assert by_state == {"DONE": JOBS}
    assert events == {"WAITING": JOBS, "ASSIGNED": JOBS, "DONE": JOBS}
    assert doubles == []


async def test_sweeps_from_two_stores_never_double_transition(db_url: str) -> None:
    a, b = await _stores(db_url, 2)
    try:
        await a.migrate()
        await a.submit_jobs("alice", [f.job(max_attempts=3) for _ in range(100)])
        claims = [await a.claim_job(f.slot(f"agent-{i}"), lease_s=1) for i in range(100)]
        assert all(c is not None for c in claims)
        req, text = f.request(max_wait="1m", ttl="1h")
        for _ in range(40):
            await a.submit_request("alice", req, text)
        later = datetime.now(UTC) + timedelta(minutes=2)
        rounds = await asyncio.gather(
            *(s.expire_leases(later) for s in (a, b, a, b)),
            *(s.expire_requests(later, 3600) for s in (a, b, a, b)),
        )
        async with a.engine.connect() as conn:
            requeued = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(job_events)
                    .where(
                        job_events.c.state == J.WAITING.value, job_events.c.reason != "submitted"
                    )
                )
            ).scalar_one()
            expired = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(request_events)
                    .where(request_events.c.state == S.EXPIRED.value)
                )
            ).scalar_one()
    finally:
        await a.close()
        await b.close()
    lease_ids = [s.id for r in rounds[:4] for s in r]
    request_ids = [s.id for r in rounds[4:] for s in r]
    assert len(lease_ids) == len(set(lease_ids)) == 100
    assert len(request_ids) == len(set(request_ids)) == 40
    assert (requeued, expired) == (100, 40)
