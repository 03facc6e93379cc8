"""A small TTL cache in front of ``Store.authenticate`` (keyed by the token's SHA-256)."""

from __future__ import annotations

import hashlib
import time

from podgrid.masterqueue.models import Principal
from podgrid.masterqueue.store import Store

MAX_CACHED_TOKENS = 10_000


class TokenCache:
    """``Store.authenticate`` behind a small TTL cache keyed by the token's digest."""

    def __init__(self, store: Store, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        """Who holds ``token`` (None for an unknown token)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await self._store.authenticate(token)
        if principal is not None and self._ttl_s > 0:
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()
            self._cache[digest] = (principal, now + self._ttl_s)
        return principal
