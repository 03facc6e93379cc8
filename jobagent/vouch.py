"""Whether a server seen in the registry is genuine: the master queue must vouch for it.

Anyone who can send a UDP datagram can publish a ``PoD_Masters`` entry, and an agent shows
its token to every server it attaches to. So before attaching, the agent checks that the
published ``Address`` is the attach URL the master queue holds for that active request (the
one its own broker reported). The answer is cached; an unknown server makes the agent ask the
master queue again, at most once per ``refresh_min_s``. When the master queue cannot be
asked, the server is not trusted (fail closed).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import structlog

from podgrid.errors import CallFailed
from podgrid.masterqueue.client import MasterQueueClient

log = structlog.get_logger("podgrid.jobagent")

REFRESH_MIN_S: Final = 0.25  # seconds between two asks while unknown servers show up
WARN_EVERY_S: Final = 60.0  # seconds between two warnings about the same fake server
MAX_WARNED: Final = 1024  # fake servers remembered for that rate limit


class Vouchers:
    """The master queue's list of genuine servers, refreshed on demand."""

    def __init__(self, client: MasterQueueClient, *, refresh_min_s: float = REFRESH_MIN_S) -> None:
        self.client = client
        self.refresh_min_s = refresh_min_s
        self._urls: dict[str, str] = {}  # request id -> attach URL
        self._asked_at = float("-inf")  # monotonic seconds
        self._lock = asyncio.Lock()
        self._warned: dict[tuple[str, str], float] = {}

    def _known(self, request_id: str, address: str) -> bool:
        return self._urls.get(request_id) == address.rstrip("/")

    async def genuine(self, request_id: str, address: str) -> bool:
        """True when the master queue vouches that ``address`` is ``request_id``'s broker."""
        if self._known(request_id, address):
            return True
        async with self._lock:
            if not self._known(request_id, address):
                await self._refresh()
        if self._known(request_id, address):
            return True
        self._warn(request_id, address)
        return False

    async def _refresh(self) -> None:
        wait_s = self._asked_at + self.refresh_min_s - time.monotonic()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        self._asked_at = time.monotonic()
        try:
            listing = await self.client.servers()
        except CallFailed as e:
            log.warning("jobagent.vouch_unavailable", error=str(e))
            return
        self._urls = {str(s.id): s.attach_url.rstrip("/") for s in listing.servers}

    def _warn(self, request_id: str, address: str) -> None:
        key = (request_id, address)
        now = time.monotonic()
        if now - self._warned.get(key, float("-inf")) < WARN_EVERY_S:
            return
        if len(self._warned) >= MAX_WARNED:
            self._warned.clear()  # a flood of made-up servers must not grow the agent's memory
        self._warned[key] = now
        log.warning(
            "jobagent.server_unvouched",
            server=request_id,
            address=address[:200],
            why="no active request of the master queue has this attach URL",
        )
