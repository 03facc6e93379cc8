"""The one error shape of the master-queue API and the middleware that produces it.

Every 4xx/5xx body is ``{"error": "<code>", "message": "...", "fields": [{"loc": [...],
"msg": "..."}]}`` (``fields`` may be empty). Domain errors of the store are mapped here, so
handlers simply let them propagate; anything unexpected becomes a logged 500 carrying the
request id (also sent as ``X-Request-Id`` on every answer).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

import podgrid.masterqueue.keys as keys
from podgrid.config.request_errors import RequestError
from podgrid.masterqueue.errors import (
    Conflict,
    DatabaseUnavailable,
    IllegalTransition,
    NotFound,
    NotOwner,
    StaleLease,
)

log = structlog.get_logger("podgrid.masterqueue")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FieldError = dict[str, Any]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An answer other than 2xx, in the API's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The JSON answer."""
        body = {"error": self.code, "message": self.message, "fields": self.fields}
        return web.json_response(body, status=self.status, headers=self.headers)


def validation_error(e: ValidationError, code: str = "invalid_body") -> ApiError:
    """A 400 naming every field pydantic refused."""
    fields = [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in e.errors(include_url=False, include_input=False)
    ]
    what = "; ".join(f"{'.'.join(str(p) for p in f['loc']) or 'body'}: {f['msg']}" for f in fields)
    return ApiError(400, code, f"invalid body: {what}", fields)


def request_config_error(e: RequestError) -> ApiError:
    """A 400 naming the line and field of every problem in a request config."""
    fields = [
        {
            "loc": [issue.field] if issue.field else [],
            "msg": issue.problem,
            "line": issue.line,
            "column": issue.column,
        }
        for issue in e.issues
    ]
    return ApiError(400, "invalid_request_config", str(e), fields)


def domain_error(e: Exception) -> ApiError | None:
    """The API error for a store exception, or None when it is not a known domain error."""
    if isinstance(e, NotFound | NotOwner):
        # NotOwner is a 404 too: a user must not learn that another user's record exists.
        return ApiError(404, "not_found", f"{e.kind} {e.ident} not found")
    if isinstance(e, IllegalTransition):
        fields = [{"loc": ["state"], "msg": f"is {e.current}; cannot move to {e.wanted}"}]
        return ApiError(409, "illegal_transition", str(e), fields)
    if isinstance(e, StaleLease):
        return ApiError(409, "stale_lease", str(e))
    if isinstance(e, Conflict):
        return ApiError(409, "idempotency_conflict", str(e))
    if isinstance(e, DatabaseUnavailable):
        return ApiError(503, "database_unavailable", "the database is unavailable; retry later")
    return None


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    info = route.resource.canonical if route.resource is not None else "unmatched"
    return info


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the API's error shape; time and count every answer."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
    started = time.perf_counter()
    try:
        resp = await handler(request)
    except ApiError as e:
        resp = e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, f"http_{e.status}")
        resp = ApiError(e.status, code, e.reason or code).response()
    except Exception as e:
        mapped = domain_error(e)
        if mapped is not None:
            resp = mapped.response()
        else:
            log.exception(
                "masterqueue.request_failed",
                request_id=request_id,
                method=request.method,
                path=request.path,
            )
            internal = ApiError(500, "internal_error", f"internal error (request id {request_id})")
            resp = internal.response()
    resp.headers["X-Request-Id"] = request_id
    request.app[keys.METRICS].observe_http(
        request.method, _route_name(request), resp.status, time.perf_counter() - started
    )
    return resp
