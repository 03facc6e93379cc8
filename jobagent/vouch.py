"""Whether a server seen in the registry is genuine, and the pass to talk to it.

Anyone who can send a UDP datagram can publish a ``PoD_Masters`` entry. So before attaching,
the agent checks that the published ``Address`` is the attach URL the master queue holds for
that active request (the one its own broker reported), and takes from the same answer
(``GET /v1/servers``) a :class:`~podgrid.jobagent.attach.BrokerPass`: the attach ticket made
for this agent (its own token is never shown to a broker) and a TLS context trusting the
master queue's broker CA alone, for the name ``request-<id>.brokers.podgrid``. The answer is
cached until a ticket is about to expire; an unknown server makes the agent ask again, at
most once per ``refresh_min_s``. When the master queue cannot be asked, the server is not
trusted (fail closed).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Final

import structlog

from podgrid.errors import CallFailed
from podgrid.https import pinned_context
from podgrid.jobagent.attach import BrokerPass
from podgrid.masterqueue.client import MasterQueueClient

log = structlog.get_logger("podgrid.jobagent")

REFRESH_MIN_S: Final = 0.25  # seconds between two asks while unknown servers show up
WARN_EVERY_S: Final = 60.0  # seconds between two warnings about the same fake server
MAX_WARNED: Final = 1024  # fake servers remembered for that rate limit
RENEW_BEFORE_S: Final = 30.0  # a ticket this close to its end is renewed before use


class Vouchers:
    """The master queue's list of genuine servers with this agent's passes, refreshed on demand."""

    def __init__(self, client: MasterQueueClient, *, refresh_min_s: float = REFRESH_MIN_S) -> None:
        self.client = client
        self.refresh_min_s = refresh_min_s
        self._urls: dict[str, str] = {}  # request id -> attach URL
        self._passes: dict[str, BrokerPass] = {}  # request id -> pass
        self._ca_pem: str | None = None
        self._context: ssl.SSLContext | None = None
        self._asked_at = float("-inf")  # monotonic seconds
        self._lock = asyncio.Lock()
        self._warned: dict[tuple[str, str], float] = {}

    def _known(self, request_id: str, address: str) -> BrokerPass | None:
        if self._urls.get(request_id) != address.rstrip("/"):
            return None
        found = self._passes.get(request_id)
        if found is None or found.expires - RENEW_BEFORE_S < time.time():
            return None
        return found

    async def genuine(self, request_id: str, address: str) -> BrokerPass | None:
        """The pass for ``address`` when the master queue vouches it is ``request_id``'s broker."""
        if (found := self._known(request_id, address)) is not None:
            return found
        async with self._lock:
            if self._known(request_id, address) is None:
                await self._refresh()
        if (found := self._known(request_id, address)) is not None:
            return found
        self._warn(request_id, address)
        return None

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
        if listing.broker_ca != self._ca_pem or self._context is None:
            self._context = pinned_context(listing.broker_ca)
            self._ca_pem = listing.broker_ca
        context = self._context
        self._urls = {str(s.id): s.attach_url.rstrip("/") for s in listing.servers}
        self._passes = {
            str(s.id): BrokerPass(s.ticket, s.ticket_expires, s.server_name, context)
            for s in listing.servers
        }

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
