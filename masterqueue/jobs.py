"""Batch jobs: submission, reads, and the lease-fenced heartbeat/finish of a claimed job.

A claim (see :mod:`podgrid.masterqueue.matcher`) hands an agent a fresh ``lease_token``.
Heartbeat and finish are compare-and-set UPDATEs on that token, so once a lease is lost (swept
back to WAITING, re-claimed, killed) the old agent's calls are refused with
:class:`StaleLease`.
A lease past its expiry that no sweep has taken away yet is still honoured.

An agent that shuts down (SIGTERM, pre-emption) while a job runs *releases* it: the job goes
back to WAITING under the same compare-and-set, and the attempt is given back, since the job
did not fail. Only :data:`FREE_RELEASES` releases per job are free; after that a release counts
as an attempt (and ends in EXPIRED when none are left), so a job that makes its agents shut
down cannot circulate for ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.masterqueue._rows import (
    body_hash,
    delimited,
    find_idempotent,
    inserted_id,
    job_record,
    load_job,
    page_query,
    save_idempotent,
)
from podgrid.masterqueue.db import now_ms
from podgrid.masterqueue.errors import IllegalTransition, NotOwner, RecordNotFound, StaleLease
from podgrid.masterqueue.schema import job_events, jobs
from podgrid.masterqueue.states import JOB_LEASED
from podgrid.protocol import JOB_FINAL, JobRecord, JobSpec, JobState

_PROGRESS = (JobState.ASSIGNED, JobState.STARTED, JobState.RUNNING)
FREE_RELEASES = 5  # releases per job that do not use up an attempt
RELEASED_PREFIX = "released: "  # how a release's history entry starts (counted by release)


async def job_event(
    conn: AsyncConnection,
    job_id: int,
    state: JobState,
    agent_id: str | None,
    reason: str | None,
    at: int,
) -> None:
    """Append one entry to a job's history."""
    await conn.execute(
        job_events.insert().values(
            job_id=job_id, state=state.value, agent_id=agent_id, reason=reason, at_ms=at
        )
    )


async def submit(
    conn: AsyncConnection, owner: str, spec: JobSpec, idempotency_key: str | None
) -> JobRecord:
    """Insert a WAITING job (or return the one an earlier try with the same key made)."""
    body = spec.model_dump(mode="json")
    digest = body_hash(body)
    if idempotency_key is not None:
        existing = await find_idempotent(conn, owner, "job", idempotency_key, digest)
        if existing is not None:
            return job_record(await load_job(conn, existing))
    at = now_ms()
    result = await conn.execute(jobs.insert().values(**_columns(owner, spec, at)))
    job_id = inserted_id(result)
    await job_event(conn, job_id, JobState.WAITING, None, "submitted", at)
    if idempotency_key is not None:
        await save_idempotent(conn, owner, "job", idempotency_key, digest, job_id, at)
    return job_record(await load_job(conn, job_id))


async def submit_many(conn: AsyncConnection, owner: str, specs: Sequence[JobSpec]) -> list[int]:
    """Insert many WAITING jobs in one transaction (no idempotency keys); their ids."""
    at = now_ms()
    ids: list[int] = []
    for spec in specs:
        result = await conn.execute(jobs.insert().values(**_columns(owner, spec, at)))
        ids.append(inserted_id(result))
    if ids:
        await conn.execute(
            job_events.insert(),
            [
                {"job_id": i, "state": JobState.WAITING.value, "reason": "submitted", "at_ms": at}
                for i in ids
            ],
        )
    return ids


def _columns(owner: str, spec: JobSpec, at: int) -> dict[str, Any]:
    return {
        "owner": owner,
        "state": JobState.WAITING.value,
        "priority": spec.priority,
        "cores": spec.cores,
        "memory_mb": spec.memory_mb,
        "ttl_s": spec.ttl_s,
        "packages_key": delimited(spec.packages),
        "sites_key": delimited(spec.sites),
        "spec": spec.model_dump(mode="json"),
        "max_attempts": spec.max_attempts,
        "attempts": 0,
        "created_ms": at,
        "updated_ms": at,
    }


async def listing(
    conn: AsyncConnection,
    owner: str | None,
    states: Sequence[JobState] | None,
    limit: int,
    after_id: int | None,
) -> list[JobRecord]:
    """Jobs by id ascending, optionally one owner's and in some states (keyset pages)."""
    q = page_query(jobs, owner, states, limit, after_id)
    return [job_record(r) for r in (await conn.execute(q)).mappings()]


async def _locked_job(conn: AsyncConnection, job_id: int) -> sa.RowMapping:
    """The ``jobs`` row, locked until the transaction ends (``FOR UPDATE``; SQLite's write
    transactions are serial already, and the clause is left out there).

    Lease operations read, decide, then compare-and-set on the state they read. Without the
    lock, an agent's first heartbeat (ASSIGNED→STARTED) committing between a short job's
    finish reading ASSIGNED and its UPDATE failed that finish as a lost lease, and the job,
    done, waited for its lease to expire and ran again (seen on MariaDB by the integration
    suite). With it, the second of two such calls reads what the first wrote.
    """
    q = sa.select(jobs).where(jobs.c.id == job_id).with_for_update()
    row = (await conn.execute(q)).mappings().first()
    if row is None:
        raise RecordNotFound("job", job_id)
    return row


async def _fenced_update(
    conn: AsyncConnection, row: sa.RowMapping, lease_token: str, values: dict[str, Any]
) -> None:
    """UPDATE the job only if it still holds ``lease_token`` in the state we read."""
    result = await conn.execute(
        jobs.update()
        .where(
            jobs.c.id == row["id"],
            jobs.c.lease_token == lease_token,
            jobs.c.state == row["state"],
        )
        .values(**values)
    )
    if result.rowcount != 1:
        latest = await load_job(conn, row["id"])
        raise StaleLease(row["id"], latest["state"])


async def heartbeat(
    conn: AsyncConnection, job_id: int, lease_token: str, state: JobState
) -> JobRecord:
    """Extend the lease by its length and move ASSIGNED→STARTED→RUNNING (never backwards)."""
    if state not in (JobState.STARTED, JobState.RUNNING):
        raise ValueError(f"a heartbeat reports STARTED or RUNNING, not {state.value}")
    row = await _locked_job(conn, job_id)
    current = JobState(row["state"])
    if row["lease_token"] != lease_token or current not in JOB_LEASED:
        raise StaleLease(job_id, current.value)
    new = max(current, state, key=_PROGRESS.index)
    at = now_ms()
    values = {"state": new.value, "lease_expires_ms": at + row["lease_ms"], "updated_ms": at}
    await _fenced_update(conn, row, lease_token, values)
    if new != current:
        await job_event(conn, job_id, new, row["agent_id"], None, at)
    return job_record({**row, **values})


async def finish(conn: AsyncConnection, job_id: int, lease_token: str, exit_code: int) -> JobRecord:
    """DONE (exit 0) or ERROR_E; repeating the same finish returns the same record."""
    row = await _locked_job(conn, job_id)
    current = JobState(row["state"])
    final = JobState.DONE if exit_code == 0 else JobState.ERROR_E
    if row["lease_token"] == lease_token and current == final and row["exit_code"] == exit_code:
        return job_record(row)  # a retried finish whose first try committed
    if row["lease_token"] != lease_token or current not in JOB_LEASED:
        raise StaleLease(job_id, current.value)
    at = now_ms()
    values = {
        "state": final.value,
        "exit_code": exit_code,
        "lease_expires_ms": None,
        "updated_ms": at,
    }
    await _fenced_update(conn, row, lease_token, values)
    await job_event(conn, job_id, final, row["agent_id"], f"exit code {exit_code}", at)
    return job_record({**row, **values})


async def release(conn: AsyncConnection, job_id: int, lease_token: str, reason: str) -> JobRecord:
    """Give a leased job back: WAITING again, the attempt not counted (see FREE_RELEASES).

    A compare-and-set on the lease token like :func:`finish`; StaleLease once the lease is
    lost. The reason goes into the job's history.
    """
    row = await _locked_job(conn, job_id)
    current = JobState(row["state"])
    if row["lease_token"] != lease_token or current not in JOB_LEASED:
        raise StaleLease(job_id, current.value)
    released = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(job_events)
        .where(
            job_events.c.job_id == job_id,
            job_events.c.reason.startswith(RELEASED_PREFIX, autoescape=True),
        )
    )
    free = (released or 0) < FREE_RELEASES
    attempts = row["attempts"] - 1 if free else row["attempts"]
    to = JobState.WAITING if free or attempts < row["max_attempts"] else JobState.EXPIRED
    at = now_ms()
    values = {
        "state": to.value,
        "attempts": max(attempts, 0),
        "agent_id": None if to == JobState.WAITING else row["agent_id"],
        "lease_token": None,
        "lease_expires_ms": None,
        "updated_ms": at,
    }
    await _fenced_update(conn, row, lease_token, values)
    counted = "not counted" if free else f"counted: {FREE_RELEASES} free releases used"
    note = f"{RELEASED_PREFIX}{reason} (attempt {row['attempts']} {counted})"
    await job_event(conn, job_id, to, row["agent_id"], note, at)
    return job_record({**row, **values})


async def kill(conn: AsyncConnection, job_id: int, owner: str | None) -> JobRecord:
    """KILLED from any non-final state; its agent's next heartbeat gets StaleLease."""
    row = await _locked_job(conn, job_id)
    if owner is not None and row["owner"] != owner:
        raise NotOwner("job", job_id)
    current = JobState(row["state"])
    if current in JOB_FINAL:
        raise IllegalTransition("job", job_id, current.value, JobState.KILLED.value)
    at = now_ms()
    result = await conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.state == current.value)
        .values(state=JobState.KILLED.value, lease_token=None, lease_expires_ms=None, updated_ms=at)
    )
    if result.rowcount != 1:
        latest = (await load_job(conn, job_id))["state"]
        raise IllegalTransition("job", job_id, latest, JobState.KILLED.value)
    reason = "killed by the owner" if owner is not None else "killed by an admin"
    await job_event(conn, job_id, JobState.KILLED, row["agent_id"], reason, at)
    return job_record(await load_job(conn, job_id))
