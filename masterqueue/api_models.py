"""Bodies the HTTP API accepts beyond the store's own models (validated at the edge)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from podgrid.masterqueue.models import Role, WorkerInfo
from podgrid.masterqueue.states import RequestState


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrokerReport(_Body):
    """``POST /v1/requests/{id}/state``: a broker's heartbeat and state report."""

    state: RequestState
    workers: list[WorkerInfo] = Field(default_factory=list, max_length=100_000)
    address: Annotated[StrictStr, Field(max_length=512)] | None = None
    connection: dict[str, Any] | None = None


class TokenCreate(_Body):
    """``POST /v1/tokens``: the token to issue."""

    role: Role
    name: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    request_id: Annotated[StrictInt, Field(ge=1)] | None = None


class JobHeartbeat(_Body):
    """``POST /v1/jobs/{id}/heartbeat``: renew the lease; report STARTED or RUNNING."""

    lease_token: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    state: Literal["STARTED", "RUNNING"] = "RUNNING"


class JobFinish(_Body):
    """``POST /v1/jobs/{id}/finish``: the job's exit code under the agent's lease."""

    lease_token: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    exit_code: Annotated[StrictInt, Field(ge=-255, le=255)]
