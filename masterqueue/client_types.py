"""Errors and answer shapes of the master-queue client (see :mod:`podgrid.masterqueue.client`).

The service's error body ``{"error": code, "message": ..., "fields": [{"loc": [...],
"msg": ...}]}`` becomes a :class:`MasterQueueHTTPError` subclass chosen by status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from podgrid.masterqueue.models import JobEvent, JobRecord, RequestEvent, RequestRecord, Role
from podgrid.masterqueue.states import RequestState

__all__ = [
    "BadRequest",
    "ConflictError",
    "ConnectionReply",
    "Forbidden",
    "JobDetail",
    "MasterQueueClientError",
    "MasterQueueHTTPError",
    "MasterQueueUnreachable",
    "NotFoundError",
    "RequestDetail",
    "ServerError",
    "StateReply",
    "Unauthorized",
    "WhoAmI",
    "error_class",
]


class MasterQueueClientError(Exception):
    """Base class of every error the master-queue client raises."""


class MasterQueueUnreachable(MasterQueueClientError):
    """The service could not be reached (connection refused, reset, timed out) after retries."""


class MasterQueueHTTPError(MasterQueueClientError):
    """The service answered with an error status; ``fields`` holds field-level complaints."""

    def __init__(
        self, status: int, code: str, message: str, fields: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.fields: list[dict[str, Any]] = [dict(f) for f in fields]
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: status, code, message and every field complaint."""
        text = f"{self.status} {self.code}: {self.message}"
        details = [_field_text(f) for f in self.fields]
        return text + (" [" + "; ".join(details) + "]" if details else "")


class BadRequest(MasterQueueHTTPError):
    """400/413/415/422: the call itself was wrong (bad request file, bad JSON, bad field)."""


class Unauthorized(MasterQueueHTTPError):
    """401: missing, unknown or revoked token."""


class Forbidden(MasterQueueHTTPError):
    """403: the token's role may not make this call."""


class NotFoundError(MasterQueueHTTPError):
    """404: no such record, or it belongs to another user."""


class ConflictError(MasterQueueHTTPError):
    """409: illegal state transition, stale lease, or a reused idempotency key."""


class ServerError(MasterQueueHTTPError):
    """5xx: the service failed (after retries where retrying was safe)."""


class RequestDetail(RequestRecord):
    """``GET /v1/requests/{id}``: the record plus its timeline (every state change)."""

    timeline: list[RequestEvent] = Field(default_factory=list)


class JobDetail(JobRecord):
    """``GET /v1/jobs/{id}``: the job plus its history (who held it, what happened)."""

    history: list[JobEvent] = Field(default_factory=list)


class ConnectionReply(BaseModel):
    """``GET /v1/requests/{id}/connection``: the broker's opaque connection JSON (owner only)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    state: RequestState
    address: str | None = None
    connection: dict[str, Any] | None = None


class WhoAmI(BaseModel):
    """``GET /v1/whoami``: the holder of the client's token."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    role: Role
    request_id: int | None = None


class StateReply(BaseModel):
    """The service's answer to a broker report; ``cancel`` means the broker must shut down."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    state: RequestState
    reason: str | None = None
    cancel: bool = False


def _field_text(field: Mapping[str, Any]) -> str:
    loc = field.get("loc")
    where = ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else str(loc or "")
    msg = str(field.get("msg", ""))
    return f"{where}: {msg}" if where else msg


def error_class(status: int) -> type[MasterQueueHTTPError]:
    """The exception class for an HTTP error status."""
    classes: dict[int, type[MasterQueueHTTPError]] = {
        401: Unauthorized,
        403: Forbidden,
        404: NotFoundError,
        409: ConflictError,
    }
    if status in classes:
        return classes[status]
    return ServerError if status >= 500 else BadRequest
