"""Tokens: plaintext shown once, only a SHA-256 digest stored; roles; per-request broker tokens."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from podgrid.masterqueue.errors import RecordNotFound
from podgrid.masterqueue.schema import tokens
from podgrid.masterqueue.store import Store
from podgrid.protocol import Role
from tests.masterqueue import factories as f


async def _all_text_in_tokens_table(store: Store) -> str:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(tokens))).all()
    return repr(rows)


async def test_tokens_authenticate_with_their_role_and_are_stored_hashed(store: Store) -> None:
    assert not await store.has_tokens()
    roles: tuple[Role, ...] = ("user", "agent", "broker", "admin")
    issued = {role: await store.create_token(role, f"{role}-1") for role in roles}
    assert await store.has_tokens()
    assert len(set(issued.values())) == 4
    for role, token in issued.items():
        who = await store.authenticate(token)
        assert who is not None
        assert (who.role, who.name, who.request_id) == (role, f"{role}-1", None)
    stored = await _all_text_in_tokens_table(store)
    for token in issued.values():
        assert token not in stored
        assert hashlib.sha256(token.encode()).hexdigest() in stored


async def test_wrong_tokens_authenticate_nobody(store: Store) -> None:
    token = await store.create_token("user", "alice")
    digest = hashlib.sha256(token.encode()).hexdigest()
    for wrong in ("", token[:-1], token + "x", token.upper(), digest):
        assert await store.authenticate(wrong) is None


async def test_per_request_broker_token_is_bound_to_its_request(store: Store) -> None:
    req, text = f.request()
    rec = await store.submit_request("alice", req, text)
    token = await store.create_token("broker", f"broker-{rec.id}", request_id=rec.id)
    who = await store.authenticate(token)
    assert who is not None
    assert (who.role, who.request_id) == ("broker", rec.id)
    assert (await store.get_request(rec.id)).broker_token_id == who.token_id
    with pytest.raises(RecordNotFound):
        await store.create_token("broker", "ghost", request_id=rec.id + 1000)
    with pytest.raises(ValueError, match="only broker tokens"):
        await store.create_token("user", "alice", request_id=rec.id)


async def test_unknown_role_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        await store.create_token("root", "eve")  # type: ignore[arg-type]
    assert not await store.has_tokens()
