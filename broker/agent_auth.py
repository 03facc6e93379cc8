"""Agent tokens, checked against the master queue once and then trusted for a while.

The attach hot path must not cost a database round trip per call: the first call with a
token asks the master queue (``GET /v1/whoami`` with that token); the answer is cached by
the token's SHA-256 for ``ttl_s`` seconds (default 30 s: a revoked agent token keeps
working on this broker for at most that long), a refusal for a couple of seconds (so a storm
of bad tokens does not become a storm of master-queue calls). Concurrent first calls with
the same token share one lookup. When the master queue cannot be reached, an unknown token
is refused (503 for the caller to retry), a cached one keeps working.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import aiohttp
import structlog

from podgrid.errors import CallFailed, Forbidden, NotFound, Unauthorized
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import WhoAmI

log = structlog.get_logger("podgrid.broker")

Verdict = Literal["ok", "refused", "unavailable"]
ALLOWED_ROLES: Final = frozenset({"agent", "admin"})
MAX_CACHED: Final = 10_000

Lookup = Callable[[str], Awaitable[WhoAmI | None]]


def masterqueue_lookup(url: str, session: aiohttp.ClientSession | None = None) -> Lookup:
    """A lookup asking the master queue at ``url`` who holds a token (None: unknown token)."""

    async def lookup(token: str) -> WhoAmI | None:
        async with MasterQueueClient(url, token, session, retry_attempts=2) as client:
            try:
                return await client.whoami()
            except (Unauthorized, Forbidden, NotFound):
                return None

    return lookup


class AgentTokens:
    """Decides whether a bearer token belongs to an agent (or an admin), with a TTL cache."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        ttl_s: float,
        negative_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[bool, float]] = {}
        self._inflight: dict[str, asyncio.Future[Verdict]] = {}
        self.lookups = 0  # master-queue round trips made (for tests and the benchmark)

    async def check(self, token: str) -> Verdict:
        """``ok`` for an agent/admin token, ``refused`` otherwise, ``unavailable`` if unknown."""
        # surrogateescape: a token is never a reason to raise (callers pass ASCII anyway)
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > self._clock():
            return "ok" if hit[0] else "refused"
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            verdict = await self._ask(token, digest)
            future.set_result(verdict)
            return verdict
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters get it, nobody logs "never retrieved"
            raise
        finally:
            del self._inflight[digest]

    async def _ask(self, token: str, digest: str) -> Verdict:
        self.lookups += 1
        try:
            who = await self._lookup(token)
        except CallFailed as e:
            log.warning("broker.token_check_unavailable", error=str(e))
            return "unavailable"
        ok = who is not None and who.role in ALLOWED_ROLES
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        ttl = self._ttl_s if ok else self._negative_ttl_s
        self._cache[digest] = (ok, self._clock() + ttl)
        return "ok" if ok else "refused"
