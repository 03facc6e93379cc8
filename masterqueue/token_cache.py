"""A small TTL cache in front of ``Store.lookup_token`` (keyed by the token's SHA-256).

An accepted token is remembered for ``ttl_s`` seconds (never past its own expiry), so the hot
routes do not cost a token query each. A revoke through this process's API takes effect here
at once (:meth:`TokenCache.forget`); another master-queue process on the same database keeps
accepting the revoked token for at most its own ``ttl_s``. Brokers cache agent tokens on
their side too (30 s, :mod:`podgrid.broker.agent_auth`): that bounds how long a revoked agent
token can still attach.
"""

from __future__ import annotations

import time

from podgrid.masterqueue.models import Principal
from podgrid.masterqueue.store import Store
from podgrid.masterqueue.tokens import token_digest

MAX_CACHED_TOKENS = 10_000


class TokenCache:
    """``Store.lookup_token`` behind a small TTL cache keyed by the token's digest."""

    def __init__(self, store: Store, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        """Who holds ``token`` (None for an unknown, revoked or expired token)."""
        digest = token_digest(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            del self._cache[digest]
        found = await self._store.lookup_token(token)
        if found is None:
            return None
        principal, expires = found
        until = now + self._ttl_s
        if expires is not None:
            until = min(until, now + (expires.timestamp() - time.time()))
        if until > now:
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()
            self._cache[digest] = (principal, until)
        return principal

    def forget(self, token_id: int) -> None:
        """Drop the cached entry of token ``token_id`` (it was just revoked)."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.token_id == token_id:
                del self._cache[digest]
