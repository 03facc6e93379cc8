"""Bodies and answers of the master queue's API beyond its records (both ends use these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from podgrid.protocol.connection import ConnectionInfo
from podgrid.protocol.records import JobRecord, RequestRecord, Role, WorkerInfo
from podgrid.protocol.states import RequestState

LeaseToken = Annotated[StrictStr, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StateReport(_Body):
    """``POST /v1/requests/{id}/state``: a broker's heartbeat and state report."""

    state: RequestState
    workers: list[WorkerInfo] = Field(default_factory=list, max_length=100_000)
    address: Annotated[StrictStr, Field(max_length=512)] | None = None
    connection: ConnectionInfo | None = None


class StateReply(_Body):
    """The answer to a broker report; ``cancel`` means the broker must shut down."""

    id: int
    state: RequestState
    reason: str | None = None
    cancel: bool = False


class ConnectionReply(_Body):
    """``GET``/``POST /v1/requests/{id}/connection`` (owner only); ``connection`` null until
    the broker reported. ``GET``: address and CA; ``POST`` (the owner's CSR): plus the signed
    client certificate. Never a private key.
    """

    id: int
    state: RequestState
    address: str | None = None
    connection: ConnectionInfo | None = None


MAX_TOKEN_TTL_S = 10 * 366 * 86_400  # ten years: beyond that, say "never" (no expiry)


class TokenCreate(_Body):
    """``POST /v1/tokens``: the token to issue; ``expires_in_s`` (None: never) bounds its life."""

    role: Role
    name: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    request_id: Annotated[StrictInt, Field(ge=1)] | None = None
    expires_in_s: Annotated[StrictInt, Field(ge=1, le=MAX_TOKEN_TTL_S)] | None = None


class TokenCreated(_Body):
    """The answer to ``POST /v1/tokens``: the plaintext token, shown once, and its id.

    ``id`` is what ``DELETE /v1/tokens/{id}`` (``podgrid token revoke ID``) takes.
    """

    token: str
    role: Role
    name: str
    request_id: int | None = None
    id: int | None = None
    expires: datetime | None = None


class TokenInfo(_Body):
    """One token as ``GET /v1/tokens`` shows it: never the token, never its digest."""

    id: int
    role: Role
    name: str
    request_id: int | None = None
    created: datetime
    expires: datetime | None = None
    revoked: datetime | None = None


class TokenPage(_Body):
    """``GET /v1/tokens``: one page by id; pass ``next`` as ``after`` for the next."""

    tokens: list[TokenInfo]
    next: int | None = None


class WhoAmI(_Body):
    """``GET /v1/whoami``: the holder of the caller's token."""

    name: str
    role: Role
    request_id: int | None = None


class JobHeartbeat(_Body):
    """``POST /v1/jobs/{id}/heartbeat``: renew the lease; report STARTED or RUNNING."""

    lease_token: LeaseToken
    state: Literal["STARTED", "RUNNING"] = "RUNNING"


class LeaseRenewed(_Body):
    """The answer to a job heartbeat."""

    id: int
    lease_expires_at: datetime


class JobFinish(_Body):
    """``POST /v1/jobs/{id}/finish``: the job's exit code under the agent's lease."""

    lease_token: LeaseToken
    exit_code: Annotated[StrictInt, Field(ge=-255, le=255)]


class JobRelease(_Body):
    """``POST /v1/jobs/{id}/release``: give a job back to the queue (its agent shuts down)."""

    lease_token: LeaseToken
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)]


class RequestPage(_Body):
    """``GET /v1/requests``: one page; pass ``next`` as ``after`` for the next."""

    requests: list[RequestRecord]
    next: int | None = None


class JobPage(_Body):
    """``GET /v1/jobs``: one page; pass ``next`` as ``after`` for the next."""

    jobs: list[JobRecord]
    next: int | None = None


class Health(BaseModel):
    """``GET /healthz`` of any service: ``status`` plus service-specific facts."""

    model_config = ConfigDict(frozen=True, extra="allow")

    status: str
