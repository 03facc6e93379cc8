"""Attack: a non-ASCII byte in ``Authorization`` used to be a 500 with a logged traceback.

aiohttp hands header bytes beyond ASCII on as surrogate escapes; the master queue and the
broker hashed the token with ``str.encode()`` and raised. Every route of the master queue
(enumerated from its router, so a new route is covered without editing this file), of the
broker and the registry's ``/publish`` get these bytes over a bare socket (no client library
re-encodes them) and must answer 401 in the one error shape, logging nothing at error level.
"""

from __future__ import annotations

import re

import pytest
import structlog
from aiohttp import web

from podgrid.protocol import ErrorBody
from tests.broker.grid import Grid
from tests.broker.raw_http import RawAnswer, raw_request

HOSTILE: list[bytes] = [
    "Bearer tök\xe9n".encode("latin-1"),  # latin-1 bytes, not UTF-8
    b"Bearer \xff",
    b"\xff",
    "Bearer pgt_é".encode(),  # valid UTF-8, still not a token
    b"Bearer " + b"a" * 600,  # longer than any token
]
PUBLIC = {"/healthz", "/metrics"}  # the only routes that need no token
# A broker started without a sign secret answers 404 on /v1/sign before reading any token.
OFF_FEATURES = {"/v1/sign"}


def route_paths(app: web.Application, request_id: int) -> list[tuple[str, str]]:
    """(method, concrete path) of every route of ``app``, placeholders filled in."""
    found: list[tuple[str, str]] = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        template = str(info.get("path") or info.get("formatter"))
        path = re.sub(r"\{id\}", str(request_id), template)
        path = re.sub(r"\{[^}]+\}", "x", path)
        found.append((route.method, path))
    return found


def assert_one_shape_401(answer: RawAnswer, where: str) -> None:
    """A 401 carrying the one error body and a request id."""
    assert answer.status == 401, (where, answer.status, answer.body[:300])
    body = ErrorBody.model_validate_json(answer.body)
    assert body.error == "unauthorized", where
    assert answer.headers.get("x-request-id"), where


@pytest.mark.parametrize("header", HOSTILE, ids=lambda h: h[:12].decode("latin-1"))
async def test_hostile_authorization_bytes_are_401_on_every_route(
    grid: Grid, header: bytes
) -> None:
    rid, _ = await grid.submit()
    async with grid.broker() as broker:
        targets = [(grid.mq.url, m, p) for m, p in route_paths(grid.mq.app, rid)]
        targets += [(broker.url, m, p) for m, p in route_paths(broker.app, rid)]
        targets.append((grid.registry.http_url, "POST", "/publish"))
        assert len(targets) >= 15 + 4 + 1
        with structlog.testing.capture_logs() as logs:
            for base, method, path in targets:
                body = b"{}" if method in ("POST", "DELETE") else b""
                answer = await raw_request(base, method, path, [(b"Authorization", header)], body)
                where = f"{method} {base}{path}"
                if path in PUBLIC:
                    assert answer.status == 200, where
                elif path in OFF_FEATURES and answer.status == 404:
                    ErrorBody.model_validate_json(answer.body)
                else:
                    assert_one_shape_401(answer, where)
    errors = [e for e in logs if e.get("log_level") in ("error", "critical", "exception")]
    assert errors == []


async def test_the_bytes_really_arrive_and_are_refused_as_malformed(grid: Grid) -> None:
    """The master queue names the header malformed (not an unknown token): the raw bytes
    reached it undamaged, and a valid token sent the same way works."""
    bad = await raw_request(
        grid.mq.url, "GET", "/v1/whoami", [(b"Authorization", b"Bearer t\xf6k\xe9n")]
    )
    assert_one_shape_401(bad, "whoami")
    assert "printable ASCII" in bad.json()["message"]
    unknown = await raw_request(
        grid.mq.url, "GET", "/v1/whoami", [(b"Authorization", b"Bearer tokn")]
    )
    assert_one_shape_401(unknown, "whoami")
    assert unknown.json()["message"] == "invalid token"
    good = await raw_request(
        grid.mq.url,
        "GET",
        "/v1/whoami",
        [(b"Authorization", b"Bearer " + grid.user_token.encode())],
    )
    assert (good.status, good.json()["name"]) == (200, "alice")
