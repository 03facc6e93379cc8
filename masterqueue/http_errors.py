"""How the master queue's failures take the one error shape (see :mod:`podgrid.web`).

Domain errors of the store are mapped here, so handlers simply let them propagate; every
answer is timed and counted by route.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

import podgrid.masterqueue.keys as keys
from podgrid.config.request_errors import RequestError
from podgrid.errors import BadRequest, ServiceError, http_error
from podgrid.masterqueue.errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    IllegalTransition,
    NotOwner,
    RecordNotFound,
    StaleLease,
)
from podgrid.web import error_middleware


def request_config_error(e: RequestError) -> BadRequest:
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
    return BadRequest(str(e), code="invalid_request_config", fields=fields)


def domain_error(e: Exception) -> ServiceError | None:
    """The API error for a store exception, or None when it is not a known domain error."""
    if isinstance(e, RecordNotFound | NotOwner):
        # NotOwner is a 404 too: a user must not learn that another user's record exists.
        return http_error(404, "not_found", f"{e.kind} {e.ident} not found")
    if isinstance(e, IllegalTransition):
        fields = [{"loc": ["state"], "msg": f"is {e.current}; cannot move to {e.wanted}"}]
        return http_error(409, "illegal_transition", str(e), fields)
    if isinstance(e, StaleLease):
        return http_error(409, "stale_lease", str(e))
    if isinstance(e, IdempotencyConflict):
        return http_error(409, "idempotency_conflict", str(e))
    if isinstance(e, DatabaseUnavailable):
        return http_error(503, "database_unavailable", "the database is unavailable; retry later")
    return None


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    return route.resource.canonical if route.resource is not None else "unmatched"


def _observe(request: web.Request, resp: web.StreamResponse, seconds: float) -> None:
    request.app[keys.METRICS].observe_http(
        request.method, _route_name(request), resp.status, seconds
    )


def masterqueue_middleware() -> Any:
    """The master queue's error middleware: domain errors mapped, every answer observed."""
    return error_middleware("masterqueue", map_error=domain_error, observe=_observe)
