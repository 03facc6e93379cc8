"""Server requests: submission, reads, and compare-and-set state transitions.

Every function takes an open transaction (``AsyncConnection``) and is run by the store through
:meth:`podgrid.masterqueue.db.Database.run`, which may run it again after a transient error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.config.request import ServerRequest
from podgrid.masterqueue import tokens
from podgrid.masterqueue._rows import (
    body_hash,
    find_idempotent,
    inserted_id,
    load_request,
    page_query,
    request_record,
    save_idempotent,
)
from podgrid.masterqueue.db import now_ms
from podgrid.masterqueue.errors import IllegalTransition, NotOwner
from podgrid.masterqueue.schema import request_events, requests
from podgrid.masterqueue.states import request_move_allowed, request_path
from podgrid.protocol import REQUEST_FINAL, ConnectionInfo, RequestRecord, RequestState, WorkerInfo

CAS_ROUNDS = 3  # re-reads after losing a compare-and-set race before giving up


async def submit(
    conn: AsyncConnection,
    owner: str,
    request: ServerRequest,
    source_text: str,
    idempotency_key: str | None,
) -> RequestRecord:
    """Insert a WAITING request (or return the one an earlier try with the same key made)."""
    digest = body_hash(source_text)
    if idempotency_key is not None:
        existing = await find_idempotent(conn, owner, "request", idempotency_key, digest)
        if existing is not None:
            return request_record(await load_request(conn, existing))
    at = now_ms()
    result = await conn.execute(
        requests.insert().values(
            owner=owner,
            name=request.name,
            state=RequestState.WAITING.value,
            request=request.model_dump(mode="json"),
            source_text=source_text,
            min_workers=request.min_workers,
            max_wait_s=request.max_wait_s,
            ttl_s=request.ttl_s,
            created_ms=at,
            updated_ms=at,
            workers=[],
            worker_count=0,
        )
    )
    request_id = inserted_id(result)
    await _event(conn, request_id, RequestState.WAITING, "submitted", at)
    if idempotency_key is not None:
        await save_idempotent(conn, owner, "request", idempotency_key, digest, request_id, at)
    return request_record(await load_request(conn, request_id))


async def listing(
    conn: AsyncConnection,
    owner: str | None,
    states: Sequence[RequestState] | None,
    limit: int,
    after_id: int | None,
) -> list[RequestRecord]:
    """Requests by id ascending, optionally one owner's and in some states (keyset pages)."""
    q = page_query(requests, owner, states, limit, after_id)
    return [request_record(r) for r in (await conn.execute(q)).mappings()]


async def _event(
    conn: AsyncConnection, request_id: int, state: RequestState, reason: str | None, at: int
) -> None:
    await conn.execute(
        request_events.insert().values(
            request_id=request_id, state=state.value, reason=reason, at_ms=at
        )
    )


async def cas_move(
    conn: AsyncConnection,
    request_id: int,
    current: RequestState,
    wanted: RequestState,
    reason: str | None,
    at: int,
    **values: Any,
) -> bool:
    """``UPDATE … WHERE state = current``: True (and one timeline event) if this call moved it.

    Every state change of a request goes through here (owner, broker, launcher, sweeps), so
    this is where a request reaching a final state ends its broker token's life, in the same
    transaction (see :func:`podgrid.masterqueue.tokens.end_for_request`).
    """
    result = await conn.execute(
        requests.update()
        .where(requests.c.id == request_id, requests.c.state == current.value)
        .values(state=wanted.value, reason=reason, updated_ms=at, **values)
    )
    if result.rowcount != 1:
        return False
    await _event(conn, request_id, wanted, reason, at)
    if wanted in REQUEST_FINAL:
        await tokens.end_for_request(conn, request_id, at)
    return True


async def transition(
    conn: AsyncConnection,
    request_id: int,
    wanted: RequestState,
    reason: str | None,
    expected: RequestState | None,
    master_host: str | None,
) -> RequestRecord:
    """Move a request to ``wanted`` if legal from its current state; IllegalTransition if not."""
    extra = {} if master_host is None else {"master_host": master_host}
    for _ in range(CAS_ROUNDS):
        current = RequestState((await load_request(conn, request_id))["state"])
        if (expected is not None and current != expected) or not request_move_allowed(
            current, wanted
        ):
            raise IllegalTransition("request", request_id, current.value, wanted.value)
        if await cas_move(conn, request_id, current, wanted, reason, now_ms(), **extra):
            return request_record(await load_request(conn, request_id))
    raise IllegalTransition("request", request_id, current.value, wanted.value)


async def cancel(conn: AsyncConnection, request_id: int, owner: str | None) -> RequestRecord:
    """Cancel a request; ``owner=None`` is an admin acting on anyone's request."""
    row = await load_request(conn, request_id)
    if owner is not None and row["owner"] != owner:
        raise NotOwner("request", request_id)
    reason = "cancelled by the owner" if owner is not None else "cancelled by an admin"
    return await transition(conn, request_id, RequestState.CANCELLED, reason, None, None)


async def broker_report(
    conn: AsyncConnection,
    request_id: int,
    state: RequestState,
    workers: Sequence[WorkerInfo],
    address: str | None,
    connection: ConnectionInfo | None,
) -> RequestRecord:
    """A broker's heartbeat: its state (walked forward along the chain), workers, address."""
    row = await load_request(conn, request_id)
    current = RequestState(row["state"])
    path = [] if state == current else request_path(current, state)
    if not path and state != current:
        raise IllegalTransition("request", request_id, current.value, state.value)
    at = now_ms()
    for step in path:
        if not await cas_move(conn, request_id, current, step, "reported by the broker", at):
            latest = RequestState((await load_request(conn, request_id))["state"])
            raise IllegalTransition("request", request_id, latest.value, state.value)
        current = step
    values: dict[str, Any] = {
        "workers": [w.model_dump(mode="json") for w in workers],
        "worker_count": len(workers),
        "heartbeat_ms": at,
    }
    if address is not None:
        values["address"] = address
    if connection is not None:
        values["connection"] = connection.model_dump(mode="json")
    result = await conn.execute(
        requests.update()
        .where(requests.c.id == request_id, requests.c.state == current.value)
        .values(**values)
    )
    if result.rowcount != 1:
        latest = RequestState((await load_request(conn, request_id))["state"])
        raise IllegalTransition("request", request_id, latest.value, state.value)
    return request_record(await load_request(conn, request_id))
