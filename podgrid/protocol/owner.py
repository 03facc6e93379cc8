"""The owner's calls on its own broker: scaling and its status (``/v1/owner/*``).

Only the cluster's owner may make them: the broker's HTTPS server asks for a TLS client
certificate of the cluster CA and these routes admit ``owner:<user>`` alone
(:mod:`podgrid.broker.owner`). ``n``, ``minimum`` and ``maximum`` are bounded by the same cap
as a request's ``max_workers`` (:data:`podgrid.config.request.DEFAULT_MAX_WORKERS_CAP`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from podgrid.config.request import DEFAULT_MAX_WORKERS_CAP

ScalingMode = Literal["request", "manual", "adaptive"]


class ScaleRequest(BaseModel):
    """``POST /v1/owner/scale``: keep ``n`` workers (adaptive scaling stops)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=0, le=DEFAULT_MAX_WORKERS_CAP)


class AdaptRequest(BaseModel):
    """``POST /v1/owner/adapt``: let the broker follow Dask's adaptive target in the bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    minimum: int = Field(default=0, ge=0, le=DEFAULT_MAX_WORKERS_CAP)
    maximum: int = Field(ge=1, le=DEFAULT_MAX_WORKERS_CAP)

    @model_validator(mode="after")
    def _ordered(self) -> AdaptRequest:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) must not exceed maximum ({self.maximum})")
        return self


class ScalingStatus(BaseModel):
    """How the broker sizes the cluster now (every owner call answers with it).

    ``mode``: ``request`` (the request's own min/max, or its ``adaptive = true``), ``manual``
    (``scale(n)``), ``adaptive`` (``adapt(minimum, maximum)``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: ScalingMode
    target: int
    minimum: int
    maximum: int
    workers: int
    pending: int
    needed: int
    sites: dict[str, int] = Field(default_factory=dict)  # connected workers per site
