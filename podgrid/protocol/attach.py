"""The broker's attach API: ``POST /v1/attach`` and ``POST /v1/detach`` (agent token).

``POST /v1/attach`` takes a :class:`podgrid.protocol.SlotDescription` and answers 200
:class:`AttachGrant`, or 409 with the error body's ``reason`` one of :data:`REFUSALS` (and
``unmet``, the unmet requirements in words, for ``requirements``).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

Refusal = Literal["full", "closed", "requirements"]
REFUSALS: Final[tuple[Refusal, ...]] = ("full", "closed", "requirements")
Name = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class AttachGrant(BaseModel):
    """What an agent needs to run one Dask worker of the cluster."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    request_id: int
    scheduler_address: str
    tls_ca: str
    tls_cert: str
    tls_key: str
    nthreads: int
    memory_limit: str  # as ``dask worker --memory-limit`` takes it, e.g. "2048MiB"
    memory_limit_mb: int
    lifetime_s: int
    attach_timeout_s: float


class DetachRequest(BaseModel):
    """``POST /v1/detach``: the place an agent gives back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: Name
    name: Name


class DetachReply(BaseModel):
    """The answer to a detach: a reservation freed, or a running worker retired."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    released: Literal["reservation", "worker"]
