"""The matcher: one atomic claim of the best WAITING job a slot can run.

The query walks ``ix_jobs_match`` (state, priority DESC, created_ms, id) and stops at the first
row that fits the slot: cores, memory and TTL by comparison, sites and packages through the
delimited keys of :mod:`podgrid.masterqueue.schema`. On MariaDB the read is
``FOR UPDATE SKIP LOCKED``
(concurrent claimers pass over each other's rows; READ COMMITTED releases rows that did not
fit); on SQLite the claim runs in a ``BEGIN IMMEDIATE`` transaction, one writer at a time.
Either way the UPDATE is also conditional on ``state = 'WAITING'``, so a job is handed out once.

A claim's lease token is drawn once per claim, before its first attempt, so a claim whose COMMIT
reached the database but whose answer was lost (the connection dropped after COMMIT) is
recognised when :class:`podgrid.masterqueue.db.Database` runs the transaction again:
:func:`claimed_with` finds the job already assigned under that token and the same claim is
returned, instead of a second job being assigned and the first left to wait for its lease.

The statements are built once (per number of slot packages) with bound parameters and run
through :class:`podgrid.masterqueue._driver.DriverStatement`: the claim is the hot path, and
building and executing SQL expressions per call cost more CPU than the round trips themselves.
"""

from __future__ import annotations

import json
import secrets
from functools import cache

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.masterqueue._driver import DriverStatement
from podgrid.masterqueue._rows import job_record
from podgrid.masterqueue.db import now_ms
from podgrid.masterqueue.schema import job_events, jobs
from podgrid.protocol import Claim, JobSpec, JobState, SlotDescription

MIN_LEASE_S = 1.0  # seconds
MAX_LEASE_S = 86_400.0  # seconds
MAX_REFUSED_PER_CLAIM = 16  # invalid stored jobs ended per claim before answering "none"
_WAITING = JobState.WAITING.value
_CLAIMED_COLUMNS = (jobs.c.id, jobs.c.owner, jobs.c.spec, jobs.c.attempts, jobs.c.created_ms)

_ASSIGN = DriverStatement(
    jobs.update()
    .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == _WAITING)
    .values(
        state=JobState.ASSIGNED.value,
        agent_id=sa.bindparam("b_agent"),
        lease_token=sa.bindparam("b_token"),
        lease_ms=sa.bindparam("b_lease_ms"),
        lease_expires_ms=sa.bindparam("b_expires"),
        attempts=jobs.c.attempts + 1,
        updated_ms=sa.bindparam("b_at"),
    )
)
_REFUSE = DriverStatement(
    jobs.update()
    .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == _WAITING)
    .values(state=JobState.ERROR_E.value, updated_ms=sa.bindparam("b_at"))
)
_CLAIMED = DriverStatement(
    sa.select(*_CLAIMED_COLUMNS, jobs.c.lease_ms, jobs.c.lease_expires_ms, jobs.c.updated_ms)
    .where(
        jobs.c.state == JobState.ASSIGNED.value,
        jobs.c.agent_id == sa.bindparam("b_agent"),
        jobs.c.lease_token == sa.bindparam("b_token"),
    )
    .limit(1)
)
_EVENT = DriverStatement(
    job_events.insert(), column_keys=["job_id", "state", "agent_id", "reason", "at_ms"]
)


def _params(slot: SlotDescription) -> dict[str, object]:
    params: dict[str, object] = {
        "b_cores": slot.cores,
        "b_memory": slot.memory_mb,
        "b_ttl": slot.ttl_s,
        "b_site": f",{slot.site},",
    }
    for i, package in enumerate(sorted(set(slot.packages))):
        params[f"b_pkg{i}"] = f",{package},"
    return params


def fits(n_packages: int) -> sa.ColumnElement[bool]:
    """The SQL condition "a WAITING job this slot can run", bound by :func:`_params`."""
    packages: sa.ColumnElement[str] = jobs.c.packages_key
    for i in range(n_packages):
        packages = sa.func.replace(packages, sa.bindparam(f"b_pkg{i}"), ",")
    site_listed = sa.func.length(
        sa.func.replace(jobs.c.sites_key, sa.bindparam("b_site"), ",")
    ) < sa.func.length(jobs.c.sites_key)
    return sa.and_(
        jobs.c.state == _WAITING,
        jobs.c.cores <= sa.bindparam("b_cores"),
        jobs.c.memory_mb <= sa.bindparam("b_memory"),
        jobs.c.ttl_s <= sa.bindparam("b_ttl"),
        sa.or_(jobs.c.sites_key == ",", site_listed),
        packages == ",",
    )


@cache
def _select(n_packages: int, locking: bool) -> DriverStatement:
    q = (
        sa.select(*_CLAIMED_COLUMNS)
        .where(fits(n_packages))
        .order_by(jobs.c.priority.desc(), jobs.c.created_ms, jobs.c.id)
        .limit(1)
    )
    return DriverStatement(q.with_for_update(skip_locked=True) if locking else q)


def new_lease_token() -> str:
    """A claim's lease token: secret, and the claim's identity across retries."""
    return secrets.token_urlsafe(24)


async def claimed_with(conn: AsyncConnection, slot: SlotDescription, token: str) -> Claim | None:
    """The claim an earlier attempt of this claim committed under ``token``, if any.

    Only ASSIGNED counts: a job that moved on since then (killed, its lease swept) was never
    seen by the agent, which must then get a fresh claim.
    """
    row = await _CLAIMED.first(conn, {"b_agent": slot.agent_id, "b_token": token})
    if row is None:
        return None
    job_id, owner, raw, attempts, created_ms, lease_ms, expires_ms, updated_ms = row
    spec = json.loads(raw) if isinstance(raw, str | bytes) else raw
    job = job_record(
        {
            "id": job_id,
            "owner": owner,
            "spec": spec,
            "state": JobState.ASSIGNED.value,
            "attempts": attempts,
            "agent_id": slot.agent_id,
            "lease_expires_ms": expires_ms,
            "exit_code": None,
            "created_ms": created_ms,
            "updated_ms": updated_ms,
        }
    )
    return Claim(job=job, lease_token=token, lease_s=lease_ms / 1000)


async def claim(
    conn: AsyncConnection, slot: SlotDescription, lease_s: float, token: str | None = None
) -> Claim | None:
    """Assign the best fitting job to ``slot.agent_id`` with a fresh lease, or None.

    ``token`` is the lease token to assign under (default: a new one); pass the same one to
    every attempt of one claim so that :func:`claimed_with` can find a committed attempt.

    A stored job whose spec no longer validates (written before today's checks: a NUL in an
    argument, ``=`` in a variable name) is never handed out: it ends ERROR_E with the reason,
    and the next job is looked at, so one old poison job cannot stop a site's matching.
    """
    lease_ms = int(min(max(lease_s, MIN_LEASE_S), MAX_LEASE_S) * 1000)
    q = _select(len(set(slot.packages)), conn.dialect.name != "sqlite")
    for _ in range(MAX_REFUSED_PER_CLAIM + 1):
        row = await q.first(conn, _params(slot))
        if row is None:
            return None
        job_id, owner, raw, attempts, created_ms = row
        spec = json.loads(raw) if isinstance(raw, str | bytes) else raw
        try:
            JobSpec.model_validate(spec)
        except ValidationError as e:
            await _refuse(conn, job_id, slot, e)
            continue
        row_ = (job_id, owner, spec, attempts, created_ms)
        return await _assign(conn, slot, lease_ms, row_, token or new_lease_token())
    return None


async def _refuse(
    conn: AsyncConnection, job_id: int, slot: SlotDescription, e: ValidationError
) -> None:
    at = now_ms()
    first = e.errors(include_url=False)[0]
    where = ".".join(str(x) for x in first["loc"])
    reason = f"the stored job is not valid today ({where}: {first['msg']}); not run"[:1000]
    await _REFUSE.rowcount(conn, {"b_id": job_id, "b_at": at})
    event = {"job_id": job_id, "state": JobState.ERROR_E.value, "agent_id": slot.agent_id}
    await _EVENT.rowcount(conn, {**event, "reason": reason, "at_ms": at})


async def _assign(
    conn: AsyncConnection,
    slot: SlotDescription,
    lease_ms: int,
    row: tuple[int, str, object, int, int],
    token: str,
) -> Claim | None:
    job_id, owner, spec, attempts, created_ms = row
    at = now_ms()
    assigned = await _ASSIGN.rowcount(
        conn,
        {
            "b_id": job_id,
            "b_agent": slot.agent_id,
            "b_token": token,
            "b_lease_ms": lease_ms,
            "b_expires": at + lease_ms,
            "b_at": at,
        },
    )
    if assigned != 1:  # cannot happen under the lock; refuse rather than double-assign
        return None
    reason = f"slot {slot.site}/{slot.ce}/{slot.host}"
    await _EVENT.rowcount(
        conn,
        {
            "job_id": job_id,
            "state": JobState.ASSIGNED.value,
            "agent_id": slot.agent_id,
            "reason": reason,
            "at_ms": at,
        },
    )
    job = job_record(
        {
            "id": job_id,
            "owner": owner,
            "spec": spec,
            "state": JobState.ASSIGNED.value,
            "attempts": attempts + 1,
            "agent_id": slot.agent_id,
            "lease_expires_ms": at + lease_ms,
            "exit_code": None,
            "created_ms": created_ms,
            "updated_ms": at,
        }
    )
    return Claim(job=job, lease_token=token, lease_s=lease_ms / 1000)
