"""Periodic sweeps: request expiry, job lease expiry, retention of finished records.

Each sweep reads candidates and moves each one with a compare-and-set UPDATE (same id, same
state, and for jobs the same fencing token), writing the timeline event only when its own
UPDATE matched. Several master-queue processes can therefore sweep at once: every transition
happens, and is recorded, exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.masterqueue.jobs import job_event
from podgrid.masterqueue.requests import cas_move
from podgrid.masterqueue.schema import (
    idempotency_keys,
    job_events,
    jobs,
    request_events,
    requests,
    tokens,
)
from podgrid.masterqueue.states import JOB_LEASED
from podgrid.protocol import JOB_FINAL, REQUEST_FINAL, JobState, RequestState

SWEEP_BATCH = 500  # rows looked at per sweep call
_WAITING_FOR_WORKERS = (RequestState.WAITING, RequestState.STARTING, RequestState.PUBLISHING)
_BROKER_ALIVE = (
    RequestState.STARTING,
    RequestState.PUBLISHING,
    RequestState.READY,
    RequestState.FULL,
)


@dataclass(frozen=True)
class Swept:
    """One transition a sweep made: which record, to which state, and why."""

    id: int
    state: str
    reason: str


def _request_verdict(
    row: sa.RowMapping, now: int, timeout_ms: int
) -> tuple[RequestState, str] | None:
    state = RequestState(row["state"])
    if row["created_ms"] + row["ttl_s"] * 1000 <= now:
        return RequestState.EXPIRED, f"ttl of {row['ttl_s']} s is over"
    if state in _WAITING_FOR_WORKERS and row["created_ms"] + row["max_wait_s"] * 1000 <= now:
        return RequestState.EXPIRED, (
            f"min_workers ({row['min_workers']}) not reached within max_wait "
            f"({row['max_wait_s']} s)"
        )
    last = row["heartbeat_ms"] if row["heartbeat_ms"] is not None else row["updated_ms"]
    if state in _BROKER_ALIVE and last + timeout_ms <= now:
        return RequestState.FAILED, f"broker heartbeat lost for {timeout_ms // 1000} s"
    return None


async def expire_requests(conn: AsyncConnection, now: int, timeout_ms: int) -> list[Swept]:
    """EXPIRED after ttl or an unmet max_wait; FAILED when the broker stopped heart-beating."""
    r = requests.c
    beat = sa.func.coalesce(r.heartbeat_ms, r.updated_ms)
    q = (
        sa.select(requests)
        .where(
            r.state.not_in([s.value for s in REQUEST_FINAL]),
            sa.or_(
                r.created_ms + r.ttl_s * 1000 <= now,
                sa.and_(
                    r.state.in_([s.value for s in _WAITING_FOR_WORKERS]),
                    r.created_ms + r.max_wait_s * 1000 <= now,
                ),
                sa.and_(r.state.in_([s.value for s in _BROKER_ALIVE]), beat + timeout_ms <= now),
            ),
        )
        .order_by(r.id)
        .limit(SWEEP_BATCH)
    )
    done: list[Swept] = []
    for row in (await conn.execute(q)).mappings().all():
        verdict = _request_verdict(row, now, timeout_ms)
        if verdict is None:
            continue
        to, reason = verdict
        if await cas_move(conn, row["id"], RequestState(row["state"]), to, reason, now):
            done.append(Swept(row["id"], to.value, reason))
    return done


async def expire_leases(conn: AsyncConnection, now: int) -> list[Swept]:
    """Jobs whose lease ran out: back to WAITING while attempts remain, else EXPIRED."""
    j = jobs.c
    q = (
        sa.select(j.id, j.state, j.lease_token, j.agent_id, j.attempts, j.max_attempts)
        .where(j.state.in_([s.value for s in JOB_LEASED]), j.lease_expires_ms <= now)
        .order_by(j.id)
        .limit(SWEEP_BATCH)
    )
    done: list[Swept] = []
    for row in (await conn.execute(q)).mappings().all():
        retry = row["attempts"] < row["max_attempts"]
        to = JobState.WAITING if retry else JobState.EXPIRED
        reason = (
            f"lease of agent {row['agent_id']} expired "
            f"(attempt {row['attempts']} of {row['max_attempts']})"
        )
        values = {"state": to.value, "lease_token": None, "lease_expires_ms": None}
        if retry:
            values["agent_id"] = None
        result = await conn.execute(
            jobs.update()
            .where(
                j.id == row["id"],
                j.state == row["state"],
                j.lease_token == row["lease_token"],
                j.lease_expires_ms <= now,
            )
            .values(**values, updated_ms=now)
        )
        if result.rowcount == 1:
            await job_event(conn, row["id"], to, row["agent_id"], reason, now)
            done.append(Swept(row["id"], to.value, reason))
    return done


async def purge_finished(conn: AsyncConnection, older_than: int) -> tuple[int, int]:
    """Delete final requests and jobs last changed before ``older_than``; (requests, jobs)."""
    r, j, k = requests.c, jobs.c, idempotency_keys.c
    request_ids = list(
        (
            await conn.execute(
                sa.select(r.id)
                .where(r.state.in_([s.value for s in REQUEST_FINAL]), r.updated_ms < older_than)
                .limit(SWEEP_BATCH)
            )
        ).scalars()
    )
    if request_ids:
        await conn.execute(
            request_events.delete().where(request_events.c.request_id.in_(request_ids))
        )
        await conn.execute(tokens.delete().where(tokens.c.request_id.in_(request_ids)))
        await conn.execute(
            idempotency_keys.delete().where(k.kind == "request", k.target_id.in_(request_ids))
        )
        await conn.execute(requests.delete().where(r.id.in_(request_ids)))
    job_ids = list(
        (
            await conn.execute(
                sa.select(j.id)
                .where(j.state.in_([s.value for s in JOB_FINAL]), j.updated_ms < older_than)
                .limit(SWEEP_BATCH)
            )
        ).scalars()
    )
    if job_ids:
        await conn.execute(job_events.delete().where(job_events.c.job_id.in_(job_ids)))
        await conn.execute(
            idempotency_keys.delete().where(k.kind == "job", k.target_id.in_(job_ids))
        )
        await conn.execute(jobs.delete().where(j.id.in_(job_ids)))
    return len(request_ids), len(job_ids)
