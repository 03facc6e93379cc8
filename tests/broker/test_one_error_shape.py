"""Registry, master queue and broker answer every error in the one shape, decoded one way.

Each call below is made over real HTTP against the real service; the body must be the one
``podgrid.protocol.ErrorBody`` (``error``, ``message``, ``fields``), the answer must carry an
``X-Request-Id``, and ``podgrid.web.decode_error`` must turn it into the exception class of
its status, the one a client of any service raises.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from podgrid.errors import (
    BadRequest,
    Conflict,
    NotFound,
    ServerError,
    ServiceError,
    Unauthorized,
    error_class,
)
from podgrid.protocol import ErrorBody
from podgrid.web import decode_error
from tests.broker.grid import Grid, slot

SMALL = """
[server]
name = "shape"
min_workers = 1
max_workers = 1
[worker]
cores = 64
memory = "256MiB"
"""

Call = tuple[str, str, dict[str, Any], int]


async def _check(session: aiohttp.ClientSession, base: str, call: Call) -> ServiceError:
    method, path, kwargs, status = call
    async with session.request(method, base + path, **kwargs) as resp:
        text = await resp.text()
        assert resp.status == status, (path, text)
        assert resp.headers["X-Request-Id"]
        assert resp.content_type == "application/json"
    body = ErrorBody.model_validate_json(text)
    assert body.error, text
    assert body.message, text
    error = decode_error(status, "", text)
    assert type(error) is error_class(status)
    assert error.code == body.error
    return error


def _auth(token: str) -> dict[str, dict[str, str]]:
    return {"headers": {"Authorization": f"Bearer {token}"}}


async def test_every_service_answers_errors_in_one_shape(grid: Grid) -> None:
    session = grid.session
    user = _auth(grid.user_token)
    registry = [
        ("GET", "/rest/a//c/p", {}, 400),
        ("POST", "/publish", {"json": {"cluster": "c", "node": "n", "params": {}}}, 401),
        ("GET", "/no/such/page", {}, 404),
    ]
    for call in registry:
        await _check(session, grid.registry.http_url, call)

    rid, _ = await grid.submit()
    mq = grid.mq.url
    bad_job = await _check(
        session, mq, ("POST", "/v1/jobs", {**user, "json": {"command": []}}, 400)
    )
    assert isinstance(bad_job, BadRequest)
    assert bad_job.fields[0]["loc"] == ["command"]
    assert isinstance(await _check(session, mq, ("GET", "/v1/requests", {}, 401)), Unauthorized)
    await _check(session, mq, ("GET", "/v1/requests/99999", user, 404))
    async with session.delete(f"{mq}/v1/requests/{rid}", **user) as resp:
        assert resp.status == 200
    again = await _check(session, mq, ("DELETE", f"/v1/requests/{rid}", user, 409))
    assert isinstance(again, Conflict)
    assert again.code == "illegal_transition"

    async with grid.broker(SMALL) as running:
        url = running.url
        agent = _auth(grid.ticket_for(url))  # what an agent shows a broker
        await _check(session, url, ("POST", "/v1/attach", {**agent, "data": b"{"}, 400))
        await _check(session, url, ("POST", "/v1/attach", {"json": slot("a1")}, 401))
        detach = {**agent, "json": {"agent_id": "a1", "name": "nobody"}}
        assert isinstance(await _check(session, url, ("POST", "/v1/detach", detach, 404)), NotFound)
        refused = await _check(
            session, url, ("POST", "/v1/attach", {**agent, "json": slot("a1")}, 409)
        )
        assert refused.extra["reason"] == "requirements"
        assert refused.extra["unmet"] == ["cores: 64 needed, the slot has 2"]

        # Anything unexpected: a logged 500 that names its request id, in the same shape.
        running.broker.places.reserve = None  # type: ignore[assignment,method-assign]
        small = {**agent, "json": slot("a1", cores=64)}
        crash = await _check(session, url, ("POST", "/v1/attach", small, 500))
        assert isinstance(crash, ServerError)
        assert crash.extra["request_id"] in crash.message

    # The master queue's own 500, with its store broken the same way (and mended after).
    store = grid.mq.store
    get_request = store.get_request
    store.get_request = None  # type: ignore[assignment,method-assign]
    try:
        crash = await _check(session, mq, ("GET", f"/v1/requests/{rid}", user, 500))
    finally:
        store.get_request = get_request  # type: ignore[method-assign]
    assert crash.extra["request_id"] in crash.message
