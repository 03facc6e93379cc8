"""The places of one cluster: reservations handed to agents and the Dask workers that came.

Everything here is synchronous on purpose: the attach view checks and grants a place with no
``await`` in between, so concurrent attaches can never both take the last place. A place is
``pending`` from the grant until a Dask worker with its name connects (the scheduler plugin
calls :meth:`Places.connected`), and is freed if that does not happen within
``attach_timeout_s`` (:meth:`Places.expire`). Pending and connected places together never
exceed the current limit (``max_workers``, or the adaptive target).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from podgrid.errors import PodGridError
from podgrid.protocol import SlotDescription, WorkerInfo

Clock = Callable[[], float]


class NoPlace(PodGridError):
    """An attach that cannot be granted; ``reason`` is ``full`` or ``closed``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Place:
    """One reserved or occupied worker place of the cluster."""

    name: str
    agent_id: str
    site: str
    host: str
    granted_at: float  # monotonic seconds
    attached_at: datetime
    deadline: float  # monotonic seconds by which the worker must have connected
    address: str | None = None  # the Dask worker's address once connected
    connected_at: float | None = None

    @property
    def startup_s(self) -> float | None:
        """Attach → worker connected, in seconds (None while pending)."""
        if self.connected_at is None:
            return None
        return round(self.connected_at - self.granted_at, 3)

    def info(self) -> WorkerInfo:
        """The place as the master queue's worker list shows it."""
        return WorkerInfo(
            name=self.name,
            host=self.host,
            site=self.site,
            agent_id=self.agent_id,
            attached_at=self.attached_at,
            startup_s=self.startup_s,
        )


class Places:
    """Reservations and connected workers of one cluster, bounded by ``limit``."""

    def __init__(
        self,
        request_id: int,
        max_workers: int,
        attach_timeout_s: float,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.request_id = request_id
        self.max_workers = max_workers
        self.limit = max_workers
        self.attach_timeout_s = attach_timeout_s
        self.open = False
        self._clock = clock
        self._seq = itertools.count(1)
        self._by_name: dict[str, Place] = {}
        self._by_address: dict[str, str] = {}
        self.granted_total = 0
        self.expired_total = 0
        self.refused_total = 0

    # -- counts ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Places granted whose worker has not connected yet."""
        return sum(1 for p in self._by_name.values() if p.address is None)

    @property
    def connected(self) -> int:
        """Dask workers connected to the scheduler."""
        return len(self._by_address)

    @property
    def occupied(self) -> int:
        """Pending plus connected: what counts against the limit."""
        return len(self._by_name)

    def needed(self, target: int) -> int:
        """How many more workers to ask for to reach ``target``."""
        return max(0, min(target, self.max_workers) - self.occupied)

    def workers(self) -> list[WorkerInfo]:
        """Connected workers, oldest first (for the master queue)."""
        return [p.info() for p in self._by_name.values() if p.address is not None]

    def get(self, name: str) -> Place | None:
        """The place called ``name``, if any."""
        return self._by_name.get(name)

    # -- moves ----------------------------------------------------------------------------

    def reserve(self, slot: SlotDescription) -> Place:
        """Grant a place to ``slot``'s agent now, or raise :class:`NoPlace`.

        An agent that already holds a pending place gets that place again (a retried attach).
        """
        for place in self._by_name.values():
            if place.agent_id == slot.agent_id and place.address is None:
                return place
        if not self.open:
            self.refused_total += 1
            raise NoPlace("closed")
        if self.occupied >= min(self.limit, self.max_workers):
            self.refused_total += 1
            raise NoPlace("full")
        now = self._clock()
        place = Place(
            name=f"pod{self.request_id}-w{next(self._seq)}",
            agent_id=slot.agent_id,
            site=slot.site,
            host=slot.host,
            granted_at=now,
            attached_at=datetime.now(UTC),
            deadline=now + self.attach_timeout_s,
        )
        self._by_name[place.name] = place
        self.granted_total += 1
        return place

    def connected_worker(self, name: str, address: str) -> Place | None:
        """A Dask worker called ``name`` joined; None when it holds no place (turn it away).

        A worker whose reservation already expired is taken back if a place is free.
        """
        place = self._by_name.get(name)
        if place is None:
            if self.occupied >= self.max_workers:
                return None
            now = self._clock()
            place = Place(name, "", "", "", now, datetime.now(UTC), now)
            self._by_name[name] = place
        if place.address is None:
            place.address = address
            place.connected_at = self._clock()
            self._by_address[address] = name
        return place

    def lost_worker(self, address: str) -> Place | None:
        """The Dask worker at ``address`` left: its place is free again."""
        name = self._by_address.pop(address, None)
        return None if name is None else self._by_name.pop(name, None)

    def release(self, name: str, agent_id: str) -> Place | None:
        """An agent gives back a place it has not used yet (detach before connecting)."""
        place = self._by_name.get(name)
        if place is None or place.agent_id != agent_id or place.address is not None:
            return None
        return self._by_name.pop(name)

    def expire(self) -> list[Place]:
        """Free the pending places whose worker did not connect in time."""
        now = self._clock()
        gone = [p for p in self._by_name.values() if p.address is None and p.deadline <= now]
        for place in gone:
            del self._by_name[place.name]
        self.expired_total += len(gone)
        return gone
