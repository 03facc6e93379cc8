"""Who waits for a request to change: the master queue's long-poll (``?wait=S&since=V``).

Every change a process makes to a request (a transition, a broker report, a cancel, a sweep)
calls :meth:`RequestWatch.changed`; a ``GET /v1/requests/{id}?wait=S&since=V`` that finds the
request still at version ``V`` waits here for the next change, so READY reaches a waiting user
in one round trip. A change made by another master-queue process on the same database is not
seen here: waiters also look again every :data:`RECHECK_S`, which bounds that delay.

A request's version (:func:`request_version`) is ``<timeline length>.<workers>.<address
known>``: it moves on every state change, every worker that comes or goes, and when the
scheduler's address arrives, not on a heartbeat that changes nothing the user sees.
"""

from __future__ import annotations

import asyncio
from typing import Final

from podgrid.protocol import RequestEvent, RequestRecord

RECHECK_S: Final = 1.0  # seconds between looks at the database while a long-poll waits
MAX_WAIT_S: Final = 60.0  # the longest ?wait= a caller may ask for


def request_version(record: RequestRecord, events: list[RequestEvent]) -> str:
    """The request's version as a long-poll compares it (an opaque string to callers)."""
    return f"{len(events)}.{record.worker_count}.{int(record.address is not None)}"


class RequestWatch:
    """Per-request wake-ups for long-polls in this process."""

    def __init__(self) -> None:
        self._events: dict[int, tuple[asyncio.Event, int]] = {}  # id -> (event, waiters)
        self.changes = 0  # changes seen (for tests)
        self.woken = 0  # waits that ended by a change (for tests: the long-poll was used)

    def changed(self, request_id: int) -> None:
        """Wake everyone waiting on ``request_id``."""
        self.changes += 1
        entry = self._events.pop(request_id, None)
        if entry is not None:
            entry[0].set()

    async def wait(self, request_id: int, timeout_s: float) -> bool:
        """Wait for the next change of ``request_id``, at most ``timeout_s``; True if changed."""
        event, waiters = self._events.get(request_id, (asyncio.Event(), 0))
        self._events[request_id] = (event, waiters + 1)
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await event.wait()
        except TimeoutError:
            return False
        finally:
            entry = self._events.get(request_id)
            if entry is not None and entry[0] is event:
                if entry[1] <= 1:
                    del self._events[request_id]  # the last waiter out: nothing is kept
                else:
                    self._events[request_id] = (event, entry[1] - 1)
        self.woken += 1
        return True
