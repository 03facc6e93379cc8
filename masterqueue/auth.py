"""Bearer tokens → :class:`Principal`, and the role rules of the API.

Roles: ``user`` (own requests and jobs), ``agent`` (match, job heartbeat and finish),
``broker`` (only the state of the request its token was made for), ``admin`` (everything,
including ``POST /v1/tokens``). Lookups are cached for a few seconds by the token's SHA-256
(never the plaintext): see :mod:`podgrid.masterqueue.token_cache`.
"""

from __future__ import annotations

from aiohttp import web

from podgrid.errors import ServiceError, http_error
from podgrid.masterqueue import keys
from podgrid.masterqueue.models import Principal
from podgrid.protocol import Role
from podgrid.web import bearer_token


def _unauthorized(message: str) -> ServiceError:
    return http_error(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


async def principal(request: web.Request) -> Principal:
    """The caller, from ``Authorization: Bearer <token>``; 401 when missing, unknown, revoked
    or expired (a malformed header, non-ASCII bytes included, is a 401 too: see
    :func:`podgrid.web.bearer_token`)."""
    if "Authorization" not in request.headers:
        raise _unauthorized("missing Authorization: Bearer <token> header")
    token = bearer_token(request)
    if token is None:
        raise _unauthorized("Authorization header must be 'Bearer <token>' (printable ASCII)")
    who = await request.app[keys.TOKENS].authenticate(token)
    if who is None:
        raise _unauthorized("invalid token")
    return who


async def require(request: web.Request, *roles: Role) -> Principal:
    """The caller if it holds one of ``roles`` (admin always does); 403 otherwise."""
    who = await principal(request)
    if who.role != "admin" and who.role not in roles:
        allowed = ", ".join((*roles, "admin"))
        raise http_error(403, "forbidden", f"role {who.role!r} may not do this (needs {allowed})")
    return who


def owner_filter(who: Principal) -> str | None:
    """The owner a listing is limited to: the caller's name, or None (all) for an admin."""
    return None if who.role == "admin" else who.name


def ensure_owner(who: Principal, owner: str, kind: str, ident: int) -> None:
    """404 unless the caller owns the record or is an admin (existence is not revealed)."""
    if who.role != "admin" and who.name != owner:
        raise http_error(404, "not_found", f"{kind} {ident} not found")
