"""State reports (heartbeats) to the master queue, and what its answers mean for the broker.

The client retries transient failures itself (``podgrid.config.retry`` policy ``masterqueue``); when
the master queue stays unreachable the report is dropped and the next heartbeat tries again:
the cluster keeps running and catches up when the master queue is back.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from podgrid.errors import CallFailed, Conflict, Forbidden, NotFound, PodGridError, Unauthorized
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import ConnectionInfo, RequestState, StateReply, WorkerInfo

log = structlog.get_logger("podgrid.broker")


class RequestGone(PodGridError):
    """The master queue no longer knows the request or refuses this broker's token."""


class Reporter:
    """Sends the broker's state, workers and connection info for one request."""

    def __init__(self, client: MasterQueueClient, request_id: int) -> None:
        self.client = client
        self.request_id = request_id
        self.ok_total = 0
        self.failed_total = 0
        self.last_ok: StateReply | None = None

    async def report(
        self,
        state: RequestState,
        workers: Sequence[WorkerInfo],
        *,
        address: str | None = None,
        connection: ConnectionInfo | None = None,
    ) -> StateReply | None:
        """One report; the answer, or None when it could not be delivered (try again later).

        Raises :class:`RequestGone` when the request vanished or the token is refused.
        """
        try:
            reply = await self.client.report_state(
                self.request_id, state, workers=workers, address=address, connection=connection
            )
        except (NotFound, Unauthorized, Forbidden) as e:
            raise RequestGone(str(e)) from e
        except Conflict as e:
            self.failed_total += 1
            log.warning("broker.report_refused", state=state.value, error=str(e))
            return None
        except CallFailed as e:
            self.failed_total += 1
            log.warning("broker.report_failed", state=state.value, error=str(e))
            return None
        self.ok_total += 1
        self.last_ok = reply
        return reply
