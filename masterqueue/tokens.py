"""Bearer tokens: created once (plaintext returned to the caller), stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.masterqueue._rows import inserted_id, load_request
from podgrid.masterqueue.db import now_ms
from podgrid.masterqueue.models import Principal
from podgrid.masterqueue.schema import requests, tokens
from podgrid.protocol import ROLES, Role

TOKEN_PREFIX = "pgt_"  # noqa: S105 - a prefix, not a secret
TOKEN_BYTES = 32


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create(conn: AsyncConnection, role: Role, name: str, request_id: int | None) -> str:
    """Store a new token's digest and return the plaintext (the only time it exists).

    A token with ``request_id`` is a per-request broker token: it is recorded on the request.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not name or len(name) > 128:
        raise ValueError(f"token name must be 1 to 128 characters, got {name!r}")
    if request_id is not None:
        if role != "broker":
            raise ValueError(f"only broker tokens belong to a request, not {role!r}")
        await load_request(conn, request_id)
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    result = await conn.execute(
        tokens.insert().values(
            token_sha256=token_digest(plaintext),
            role=role,
            name=name,
            request_id=request_id,
            created_ms=now_ms(),
        )
    )
    if request_id is not None:
        token_id = inserted_id(result)
        await conn.execute(
            requests.update().where(requests.c.id == request_id).values(broker_token_id=token_id)
        )
    return plaintext


async def authenticate(conn: AsyncConnection, token: str) -> Principal | None:
    """Who holds ``token``, or None for an unknown token."""
    t = tokens.c
    q = sa.select(t.id, t.name, t.role, t.request_id).where(t.token_sha256 == token_digest(token))
    row = (await conn.execute(q)).first()
    if row is None:
        return None
    return Principal(token_id=row.id, name=row.name, role=row.role, request_id=row.request_id)


async def any_exist(conn: AsyncConnection) -> bool:
    """Whether any token was ever created (a first ``serve`` makes the admin token)."""
    return (await conn.execute(sa.select(tokens.c.id).limit(1))).first() is not None
