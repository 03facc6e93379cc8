"""Rows to records, records to column values, and the idempotency-key helpers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.config.request import ServerRequest
from podgrid.masterqueue.db import from_ms, from_ms_required
from podgrid.masterqueue.errors import IdempotencyConflict, RecordNotFound
from podgrid.masterqueue.schema import idempotency_keys, job_events, jobs, request_events, requests
from podgrid.protocol import JobEvent, JobRecord, JobSpec, RequestEvent, RequestRecord

# Stored requests were validated on submission under the operator's cap; do not re-check it.
_NO_CAP = {"max_workers_cap": 2**31}
MAX_IDEMPOTENCY_KEY_LEN = 128
MAX_PAGE = 1000  # rows per listing page


def delimited(items: tuple[str, ...] | list[str]) -> str:
    """``("b", "a")`` → ``",a,b,"``; ``()`` → ``","`` (see :mod:`podgrid.masterqueue.schema`)."""
    return "," + "".join(f"{item}," for item in sorted(set(items)))


def inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key an INSERT just created."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the INSERT returned no primary key")
    return int(key[0])


def body_hash(body: Any) -> str:
    """A stable digest of a submission, to tell a retry from a different body under one key."""
    text = body if isinstance(body, str) else json.dumps(body, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def request_record(row: sa.RowMapping) -> RequestRecord:
    """A ``requests`` row as a :class:`RequestRecord`."""
    return RequestRecord(
        id=row["id"],
        owner=row["owner"],
        name=row["name"],
        state=row["state"],
        reason=row["reason"],
        request=ServerRequest.model_validate(row["request"], context=_NO_CAP),
        created_at=from_ms_required(row["created_ms"]),
        updated_at=from_ms_required(row["updated_ms"]),
        broker_token_id=row["broker_token_id"],
        master_host=row["master_host"],
        address=row["address"],
        workers=row["workers"] or [],
        worker_count=row["worker_count"],
        connection=row["connection"],
        last_heartbeat=from_ms(row["heartbeat_ms"]),
    )


def _stored_spec(data: Any) -> JobSpec:
    """The stored spec; one that today's checks refuse (an old row) is shown as it is.

    The matcher never hands such a job out (:func:`podgrid.masterqueue.matcher.claim`); its
    owner can still read and kill it, which a 500 would prevent.
    """
    try:
        return JobSpec.model_validate(data)
    except ValidationError:
        fields = dict(data) if isinstance(data, dict) else {}
        for name in ("packages", "sites"):  # tuples in the model, lists in JSON
            fields[name] = tuple(fields.get(name) or ())
        return JobSpec.model_construct(**fields)


def job_record(row: sa.RowMapping | dict[str, Any]) -> JobRecord:
    """A ``jobs`` row (or a dict with its columns) as a :class:`JobRecord`."""
    return JobRecord(
        id=row["id"],
        owner=row["owner"],
        spec=_stored_spec(row["spec"]),
        state=row["state"],
        attempts=row["attempts"],
        agent_id=row["agent_id"],
        lease_expires_at=from_ms(row["lease_expires_ms"]),
        exit_code=row["exit_code"],
        created_at=from_ms_required(row["created_ms"]),
        updated_at=from_ms_required(row["updated_ms"]),
    )


async def load_request(conn: AsyncConnection, request_id: int) -> sa.RowMapping:
    """The ``requests`` row or :class:`RecordNotFound`."""
    row = (
        (await conn.execute(sa.select(requests).where(requests.c.id == request_id)))
        .mappings()
        .first()
    )
    if row is None:
        raise RecordNotFound("request", request_id)
    return row


async def load_job(conn: AsyncConnection, job_id: int) -> sa.RowMapping:
    """The ``jobs`` row or :class:`RecordNotFound`."""
    row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).mappings().first()
    if row is None:
        raise RecordNotFound("job", job_id)
    return row


async def request_timeline(conn: AsyncConnection, request_id: int) -> list[RequestEvent]:
    """Every state change of a request, oldest first."""
    await load_request(conn, request_id)
    q = sa.select(request_events).where(request_events.c.request_id == request_id)
    rows = (await conn.execute(q.order_by(request_events.c.id))).mappings()
    return [
        RequestEvent(state=r["state"], reason=r["reason"], at=from_ms_required(r["at_ms"]))
        for r in rows
    ]


async def job_timeline(conn: AsyncConnection, job_id: int) -> list[JobEvent]:
    """Every state change of a job, oldest first."""
    await load_job(conn, job_id)
    q = sa.select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
    return [
        JobEvent(
            state=r["state"],
            agent_id=r["agent_id"],
            reason=r["reason"],
            at=from_ms_required(r["at_ms"]),
        )
        for r in (await conn.execute(q)).mappings()
    ]


async def find_idempotent(
    conn: AsyncConnection, owner: str, kind: str, key: str, digest: str
) -> int | None:
    """The id an earlier submission under ``key`` created, or None.

    :class:`IdempotencyConflict` when the bodies differ.
    """
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LEN:
        raise IdempotencyConflict(
            f"idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        )
    t = idempotency_keys.c
    q = sa.select(t.target_id, t.body_sha256).where(
        t.owner == owner, t.kind == kind, t.idem_key == key
    )
    row = (await conn.execute(q)).first()
    if row is None:
        return None
    if row.body_sha256 != digest:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different {kind}"
        )
    return int(row.target_id)


async def save_idempotent(
    conn: AsyncConnection, owner: str, kind: str, key: str, digest: str, target_id: int, at: int
) -> None:
    """Remember that ``key`` created ``target_id`` (unique per owner and kind)."""
    await conn.execute(
        idempotency_keys.insert().values(
            owner=owner,
            kind=kind,
            idem_key=key,
            body_sha256=digest,
            target_id=target_id,
            created_ms=at,
        )
    )


def page_query(
    table: sa.Table,
    owner: str | None,
    states: Sequence[StrEnum] | None,
    limit: int,
    after_id: int | None,
) -> sa.Select[Any]:
    """Rows of ``table`` by id ascending, one owner's and in some states if asked (keyset)."""
    q = sa.select(table).order_by(table.c.id).limit(max(1, min(limit, MAX_PAGE)))
    if owner is not None:
        q = q.where(table.c.owner == owner)
    if states:
        q = q.where(table.c.state.in_([s.value for s in states]))
    if after_id is not None:
        q = q.where(table.c.id > after_id)
    return q
