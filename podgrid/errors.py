"""The root of every error PoD Grid raises on purpose, and the errors of its HTTP answers.

Every exception a user or operator can meet derives from :class:`PodGridError`. An HTTP error
answer of any service (master queue, registry, broker) is a :class:`ServiceError` subclass
chosen by status: the services raise them and one middleware (:mod:`podgrid.web`) renders
them as the one error body (:class:`podgrid.protocol.ErrorBody`); the clients decode that body
back into the same classes (:func:`podgrid.web.decode_error`), so ``except NotFound`` means
the same thing on both ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "RETRYABLE",
    "BadRequest",
    "CallFailed",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PodGridError",
    "ServerError",
    "ServiceError",
    "ServiceUnavailable",
    "Unauthorized",
    "Unreachable",
    "error_class",
    "http_error",
]


class PodGridError(Exception):
    """Root of every error PoD Grid raises on purpose."""


class CallFailed(PodGridError):
    """A call to a PoD Grid service failed: no answer, or an error answer."""


class Unreachable(CallFailed):
    """A service could not be reached (refused, reset, timed out), after any retries."""


class ServiceError(CallFailed):
    """An error answer in the one shape: status, machine-readable code, message, fields.

    ``fields`` holds field-level complaints (``{"loc": [...], "msg": ...}`` plus, for request
    files, ``line``/``column``); ``extra`` more keys of the body (a refused attach's
    ``reason``); ``headers`` go with the answer. Subclasses fix the status; ``code`` defaults
    per class.
    """

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        fields: Sequence[Mapping[str, Any]] = (),
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message
        self.fields: list[dict[str, Any]] = [dict(f) for f in fields]
        self.headers: dict[str, str] = dict(headers or {})
        self.extra: dict[str, Any] = dict(extra or {})  # more keys of the body (``reason``)
        if status is not None:
            self.status = status  # type: ignore[misc] # e.g. 413 or 422 as a BadRequest
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: status, code, message and every field complaint."""
        text = f"{self.status} {self.code}: {self.message}"
        details = [_field_text(f) for f in self.fields]
        return text + (" [" + "; ".join(details) + "]" if details else "")


class BadRequest(ServiceError):
    """400 (also 405/413/415/422): the call itself was wrong (bad file, JSON, field)."""

    status = 400
    default_code = "bad_request"


class Unauthorized(ServiceError):
    """401: missing, unknown or revoked token."""

    status = 401
    default_code = "unauthorized"


class Forbidden(ServiceError):
    """403: the token's role may not make this call."""

    status = 403
    default_code = "forbidden"


class NotFound(ServiceError):
    """404: no such record, or it belongs to another user (existence is never revealed)."""

    status = 404
    default_code = "not_found"


class Conflict(ServiceError):
    """409: illegal transition, stale lease, reused idempotency key, no place in a cluster."""

    status = 409
    default_code = "conflict"


class ServiceUnavailable(ServiceError):
    """503: the service cannot answer now (its database or master queue is down); retry."""

    status = 503
    default_code = "unavailable"


class ServerError(ServiceError):
    """Any other 5xx, or an answer that is not what the protocol says."""

    status = 500
    default_code = "internal_error"


# What a client may try again: no answer, or the service said it cannot answer now.
RETRYABLE: tuple[type[CallFailed], ...] = (Unreachable, ServiceUnavailable, ServerError)

_BY_STATUS: dict[int, type[ServiceError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[ServiceError]:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else BadRequest


def _field_text(field: Mapping[str, Any]) -> str:
    loc = field.get("loc")
    where = ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else str(loc or "")
    msg = str(field.get("msg", ""))
    return f"{where}: {msg}" if where else msg


def http_error(
    status: int,
    code: str,
    message: str,
    fields: Sequence[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> ServiceError:
    """The :class:`ServiceError` for ``status`` with this code, message and fields."""
    return error_class(status)(message, code=code, fields=fields, status=status, headers=headers)
