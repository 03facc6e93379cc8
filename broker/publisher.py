"""Publishing the cluster's needs to the registry (cluster ``PoD_Masters``, node = request id).

The transport is :func:`podgrid.monitoring.publish_target.open_publisher`'s: ApMon UDP (fire and
forget; a lost datagram is repaired by the next publication) or HTTP ``POST /publish``
(acknowledged; a failure is logged and counted, never fatal). A registry list publishes to
every registry of it at once (``FanOutPublisher``); only all of them failing counts as a
failed publication.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog

from podgrid.errors import CallFailed
from podgrid.monitoring.client import Publisher
from podgrid.protocol import MASTERS_CLUSTER, MasterParam

log = structlog.get_logger("podgrid.broker")

ParamValue = str | int | float


class Publication:
    """The ``PoD_Masters/<request id>`` parameter set and the act of sending it."""

    def __init__(self, sink: Publisher, request_id: int, static: Mapping[str, ParamValue]) -> None:
        self.sink = sink
        self.node = str(request_id)
        self.static = dict(static)
        self.sent_total = 0
        self.failed_total = 0
        self.first_sent_at: float | None = None  # monotonic seconds
        self.last: dict[str, ParamValue] = {}

    async def send(self, *, needed: int, workers: int, state: str) -> bool:
        """Publish the current values; False when the registry refused or was unreachable."""
        params: dict[str, ParamValue] = {
            **self.static,
            MasterParam.NEEDED_WORKERS: needed,
            MasterParam.WORKERS: workers,
            MasterParam.STATE: state,
        }
        try:
            await self.sink.send(MASTERS_CLUSTER, self.node, params, time.time())
        except CallFailed as e:
            self.failed_total += 1
            log.warning("broker.publish_failed", node=self.node, error=str(e))
            return False
        if self.first_sent_at is None:
            self.first_sent_at = time.monotonic()
        self.sent_total += 1
        self.last = params
        return True
