"""Bearer tokens: created once (plaintext returned to the caller), stored only as SHA-256.

A token works until it is revoked (``revoked_ms``) or expires (``expires_ms``); either makes
:func:`authenticate` answer None, so every route answers 401. A per-request broker token dies
with its request, not at the retention purge days later: the transaction that moves the
request to a final state (:func:`podgrid.masterqueue.requests.cas_move`) caps its life at
:data:`FINAL_GRACE_S` (:func:`end_for_request`), and the broker's next report, answered
``cancel: true``, revokes it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.masterqueue._rows import inserted_id, load_request
from podgrid.masterqueue.db import from_ms, from_ms_required, now_ms
from podgrid.masterqueue.errors import RecordNotFound
from podgrid.masterqueue.models import Principal
from podgrid.masterqueue.schema import requests, tokens
from podgrid.protocol import ROLES, Role
from podgrid.protocol.api import TokenInfo

TOKEN_PREFIX = "pgt_"  # noqa: S105 - a prefix, not a secret
TOKEN_BYTES = 32
FINAL_GRACE_S = 60  # a broker token outlives its request's end by at most this long
_INFO_COLUMNS = (
    tokens.c.id,
    tokens.c.role,
    tokens.c.name,
    tokens.c.request_id,
    tokens.c.created_ms,
    tokens.c.expires_ms,
    tokens.c.revoked_ms,
)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored and looked up.

    ``surrogateescape``: a header's stray bytes must never make the lookup raise (the HTTP
    edge refuses them before, see :func:`podgrid.web.bearer_token`; this is the backstop).
    """
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        role=row.role,
        name=row.name,
        request_id=row.request_id,
        created=from_ms_required(row.created_ms),
        expires=from_ms(row.expires_ms),
        revoked=from_ms(row.revoked_ms),
    )


async def issue(
    conn: AsyncConnection,
    role: Role,
    name: str,
    request_id: int | None,
    expires_in_s: int | None = None,
) -> tuple[str, TokenInfo]:
    """Store a new token's digest; the plaintext (the only time it exists) and its record.

    A token with ``request_id`` is a per-request broker token: it is recorded on the request.
    ``expires_in_s`` (None: never) makes it stop working that many seconds from now.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not name or len(name) > 128:
        raise ValueError(f"token name must be 1 to 128 characters, got {name!r}")
    if expires_in_s is not None and expires_in_s <= 0:
        raise ValueError(f"expires_in_s must be positive, got {expires_in_s}")
    if request_id is not None:
        if role != "broker":
            raise ValueError(f"only broker tokens belong to a request, not {role!r}")
        await load_request(conn, request_id)
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    at = now_ms()
    expires_ms = None if expires_in_s is None else at + expires_in_s * 1000
    result = await conn.execute(
        tokens.insert().values(
            token_sha256=token_digest(plaintext),
            role=role,
            name=name,
            request_id=request_id,
            created_ms=at,
            expires_ms=expires_ms,
        )
    )
    token_id = inserted_id(result)
    if request_id is not None:
        await conn.execute(
            requests.update().where(requests.c.id == request_id).values(broker_token_id=token_id)
        )
    return plaintext, await load(conn, token_id)


async def create(
    conn: AsyncConnection,
    role: Role,
    name: str,
    request_id: int | None,
    expires_in_s: int | None = None,
) -> str:
    """Like :func:`issue`, the plaintext only."""
    return (await issue(conn, role, name, request_id, expires_in_s))[0]


async def lookup(conn: AsyncConnection, token: str) -> tuple[Principal, int | None] | None:
    """Who holds ``token`` and when it expires (epoch ms, None: never); None when unknown,
    revoked or expired."""
    t = tokens.c
    at = now_ms()
    q = sa.select(t.id, t.name, t.role, t.request_id, t.expires_ms).where(
        t.token_sha256 == token_digest(token),
        t.revoked_ms.is_(None),
        sa.or_(t.expires_ms.is_(None), t.expires_ms > at),
    )
    row = (await conn.execute(q)).first()
    if row is None:
        return None
    who = Principal(token_id=row.id, name=row.name, role=row.role, request_id=row.request_id)
    return who, row.expires_ms


async def authenticate(conn: AsyncConnection, token: str) -> Principal | None:
    """Who holds ``token``, or None for an unknown, revoked or expired token."""
    found = await lookup(conn, token)
    return None if found is None else found[0]


async def load(conn: AsyncConnection, token_id: int) -> TokenInfo:
    """One token's record (never the token or its digest); RecordNotFound if missing."""
    row = (await conn.execute(sa.select(*_INFO_COLUMNS).where(tokens.c.id == token_id))).first()
    if row is None:
        raise RecordNotFound("token", token_id)
    return _info(row)


async def listing(
    conn: AsyncConnection, limit: int, after_id: int | None, name: str | None = None
) -> list[TokenInfo]:
    """Tokens by id ascending (keyset pages), optionally only those called ``name``."""
    q = sa.select(*_INFO_COLUMNS).order_by(tokens.c.id).limit(limit)
    if after_id is not None:
        q = q.where(tokens.c.id > after_id)
    if name is not None:
        q = q.where(tokens.c.name == name)
    return [_info(row) for row in (await conn.execute(q)).all()]


async def revoke(conn: AsyncConnection, token_id: int) -> TokenInfo:
    """Revoke one token (a second revoke keeps the first time); RecordNotFound if missing."""
    await conn.execute(
        tokens.update()
        .where(tokens.c.id == token_id, tokens.c.revoked_ms.is_(None))
        .values(revoked_ms=now_ms())
    )
    return await load(conn, token_id)


async def end_for_request(conn: AsyncConnection, request_id: int, at: int) -> None:
    """Let the tokens bound to ``request_id`` (its broker's) die: they expire
    :data:`FINAL_GRACE_S` after ``at`` at the latest, in the caller's transaction.

    Not revoked on the spot: the broker must still hear, on its next report, *how* its
    request ended (``cancel: true`` with the final state; a 401 would make it record FAILED
    for a cancelled request). The state route revokes the token as it gives that answer
    (:func:`revoke`), and the grace bounds the life of a token whose broker never calls again.
    On a final request the token can do nothing but read its request and be told to stop.
    """
    end = at + FINAL_GRACE_S * 1000
    await conn.execute(
        tokens.update()
        .where(
            tokens.c.request_id == request_id,
            tokens.c.revoked_ms.is_(None),
            sa.or_(tokens.c.expires_ms.is_(None), tokens.c.expires_ms > end),
        )
        .values(expires_ms=end)
    )


async def any_exist(conn: AsyncConnection) -> bool:
    """Whether any token was ever created (a first ``serve`` makes the admin token)."""
    return (await conn.execute(sa.select(tokens.c.id).limit(1))).first() is not None
