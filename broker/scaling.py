"""Who sets a cluster's size: its request, the owner's ``scale(n)`` or adaptive bounds.

A broker starts in the request's mode: it asks for ``max_workers`` until ``max_wait`` (or,
with ``adaptive = true``, follows Dask's adaptive target between ``min_workers`` and
``max_workers`` for the cluster's whole life). The owner takes over with ``scale(n)``
(``manual``: keep ``n``) or ``adapt(minimum, maximum)`` (``adaptive``); from then on the
broker keeps publishing its need for the rest of the cluster's life, as adaptive requests do,
and the ceiling of places grows to what the owner asked for (never above the request cap).

Shrinking is graceful: the broker picks the workers Dask would close first
(``Scheduler.workers_to_close``) and retires them with ``retire_workers``, which moves every
result they hold to the workers that stay before closing them, so nothing held is
recomputed. :attr:`Scaling.retiring` remembers the workers on their way out, so a slow
retirement is not asked for twice.
"""

from __future__ import annotations

from typing import Any

from podgrid.config.request import ServerRequest
from podgrid.protocol import ScalingMode


class Scaling:
    """The sizing rule of one cluster (see the module docstring)."""

    def __init__(self, request: ServerRequest) -> None:
        self.mode: ScalingMode = "adaptive" if request.adaptive else "request"
        self.minimum = request.min_workers
        self.maximum = request.max_workers
        self.n = request.max_workers  # the manual target
        self.ceiling = request.max_workers  # the most places the cluster may hold
        self.retiring: set[str] = set()  # worker addresses being retired

    @property
    def elastic(self) -> bool:
        """Whether the target moves (and publishing lasts for the cluster's whole life)."""
        return self.mode != "request"

    def scale(self, n: int) -> None:
        """Keep ``n`` workers from now on (adaptive scaling stops)."""
        self.mode, self.n = "manual", n
        self.minimum = self.maximum = n
        self.ceiling = max(self.ceiling, n)

    def adapt(self, minimum: int, maximum: int) -> None:
        """Follow Dask's adaptive target between ``minimum`` and ``maximum``."""
        self.mode, self.minimum, self.maximum = "adaptive", minimum, maximum
        self.ceiling = max(self.ceiling, maximum)

    def target(self, scheduler: Any) -> int:
        """How many workers the cluster should have now."""
        if self.mode == "manual":
            return self.n
        if self.mode == "adaptive":
            wanted = int(scheduler.adaptive_target())
            return max(self.minimum, min(self.maximum, wanted))
        return self.maximum

    def to_retire(self, scheduler: Any, target: int) -> list[str]:
        """The addresses of the workers to retire now to come down to ``target``."""
        self.retiring &= set(scheduler.workers)  # the ones that left are done
        surplus = len(scheduler.workers) - len(self.retiring) - target
        if surplus <= 0:
            return []
        chosen = scheduler.workers_to_close(n=surplus + len(self.retiring), attribute="address")
        fresh = [a for a in chosen if a not in self.retiring][:surplus]
        self.retiring.update(fresh)
        return fresh
