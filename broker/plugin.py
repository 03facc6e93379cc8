"""The scheduler plugin that ties Dask workers joining and leaving to the cluster's places."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from distributed.diagnostics.plugin import SchedulerPlugin

from podgrid.broker.places import Places

log = structlog.get_logger("podgrid.broker")

Spawn = Callable[[Coroutine[Any, Any, Any], str], None]


class PlacesPlugin(SchedulerPlugin):
    """Marks a place connected when its worker joins, frees it when the worker leaves.

    A worker without a place (its reservation expired and the cluster filled up meanwhile)
    is removed at once, so the cluster never holds more than ``max_workers``.
    """

    name = "podgrid-places"

    def __init__(self, places: Places, on_change: Callable[[], None], spawn: Spawn) -> None:
        self.places = places
        self.on_change = on_change
        self.spawn = spawn

    def add_worker(self, scheduler: Any, worker: str) -> None:
        """A worker joined: occupy its place, or turn it away when it has none."""
        ws = scheduler.workers.get(worker)
        name = str(ws.name) if ws is not None else worker
        place = self.places.connected_worker(name, worker)
        if place is None:
            log.warning("broker.worker_refused", name=name, address=worker, reason="no place")
            self.spawn(
                scheduler.remove_worker(worker, stimulus_id="podgrid-no-place", close=True),
                "broker-remove-worker",
            )
            return
        log.info("broker.worker_connected", name=name, address=worker, startup_s=place.startup_s)
        self.on_change()

    def remove_worker(
        self, scheduler: Any, worker: str, *, stimulus_id: str, **kwargs: Any
    ) -> None:
        """A worker left: its place is free again."""
        place = self.places.lost_worker(worker)
        if place is not None:
            log.info("broker.worker_lost", name=place.name, address=worker)
            self.on_change()
