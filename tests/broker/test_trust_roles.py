"""Role by route: who may call what, asserted against the real services, one row per route.

The master queue's rows are checked against its router: a route without a row fails this
test (add the row when you add the route). Roles: no token, the request's owner, another
user, an agent, the request's broker, another request's broker, an admin, a revoked token and
an expired one. Each (route, role) call gets a fresh request, job and target token, so a
call that changes state (cancel, kill, revoke) does not decide the next one's answer.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from podgrid.monitoring import keys as registry_keys
from podgrid.protocol import ErrorBody
from tests.broker.grid import DEFAULT_REQUEST, Grid, slot
from tests.broker.test_trust_bytes import route_paths
from tests.masterqueue import factories as f

ROLES = (
    "none",
    "owner",
    "other",
    "agent",
    "broker",
    "broker_other",
    "admin",
    "revoked",
    "expired",
)
Expect = dict[str, set[int]]
ANY = set(range(100, 600)) - {500}


def row(default: int | set[int], **by_role: int | set[int]) -> Expect:
    """Expected statuses: ``default`` for every valid token not named; 401 for the invalid."""
    as_set = {k: {v} if isinstance(v, int) else v for k, v in by_role.items()}
    base = {default} if isinstance(default, int) else default
    out = {role: as_set.get(role, base) for role in ROLES}
    for invalid in ("none", "revoked", "expired"):
        out[invalid] = as_set.get(invalid, {401})
    return out


USER_ONLY = {"agent": 403, "broker": 403, "broker_other": 403}
ADMIN_ONLY = row(403, admin=201)
LEASE = {404, 409}  # an agent with a lease it does not hold: past the role check
MQ_TABLE: dict[tuple[str, str], tuple[Expect, Any]] = {
    ("POST", "/v1/requests"): (row(201, **USER_ONLY), DEFAULT_REQUEST),
    ("GET", "/v1/requests"): (row(200, **USER_ONLY), None),
    ("GET", "/v1/requests/{id}"): (
        row(200, other=404, agent=403, broker_other=404),
        None,
    ),
    ("GET", "/v1/requests/{id}/connection"): (
        row(403, owner=200, other=404),
        None,
    ),
    ("POST", "/v1/requests/{id}/connection"): (  # an empty body: 400 once past the role check
        row(403, owner=400, other=404, admin={400, 403, 404}),
        {},
    ),
    ("DELETE", "/v1/requests/{id}"): (row(200, other=404, **USER_ONLY), None),
    ("POST", "/v1/requests/{id}/certificate"): (  # an empty body: 400 past the role check
        row(403, broker=400),
        {},
    ),
    ("POST", "/v1/requests/{id}/state"): (
        row(403, broker=200, admin=200),
        {"state": "WAITING"},
    ),
    ("POST", "/v1/jobs"): (row(201, **USER_ONLY), {"command": ["true"]}),
    ("GET", "/v1/jobs"): (row(200, **USER_ONLY), None),
    ("GET", "/v1/jobs/{id}"): (row(200, other=404, **USER_ONLY), None),
    ("DELETE", "/v1/jobs/{id}"): (row(200, other=404, **USER_ONLY), None),
    ("POST", "/v1/jobs/{id}/heartbeat"): (
        row(403, agent=LEASE, admin=LEASE),
        {"lease_token": "nope", "state": "RUNNING"},
    ),
    ("POST", "/v1/jobs/{id}/finish"): (
        row(403, agent=LEASE, admin=LEASE),
        {"lease_token": "nope", "exit_code": 0},
    ),
    ("POST", "/v1/jobs/{id}/release"): (
        row(403, agent=LEASE, admin=LEASE),
        {"lease_token": "nope", "reason": "role table"},
    ),
    ("POST", "/v1/match"): (
        row(403, agent={200, 204}, admin={200, 204}),
        f.slot("role-table").model_dump(mode="json"),
    ),
    ("GET", "/v1/servers"): (row(403, agent=200, admin=200), None),
    ("POST", "/v1/tokens"): (ADMIN_ONLY, {"role": "user", "name": "made-by-table"}),
    ("GET", "/v1/tokens"): (row(403, admin=200), None),
    ("DELETE", "/v1/tokens/{id}"): (row(403, admin=200), None),
    ("GET", "/v1/whoami"): (row(200), None),
    ("GET", "/healthz"): (row(200, none=200, revoked=200, expired=200), None),
    ("GET", "/metrics"): (row(200, none=200, revoked=200, expired=200), None),
}


@dataclass
class World:
    """A request of alice's, a job of hers, and one token of every role."""

    request_id: int
    job_id: int
    victim_token_id: int
    tokens: dict[str, str | None]


async def make_world(grid: Grid, expired: str) -> World:
    """Fresh records and tokens (the expired token is shared: it takes a second to age)."""
    store = grid.mq.store
    req, text = f.request()
    rid = (await store.submit_request("alice", req, text)).id
    other_req, other_text = f.request()
    other_rid = (await store.submit_request("bob", other_req, other_text)).id
    jid = (await store.submit_job("alice", f.job(command=["sleep", "0"]))).id
    revoked, revoked_info = await store.issue_token("user", "alice")
    await store.revoke_token(revoked_info.id)
    _, victim = await store.issue_token("user", "victim")
    tokens: dict[str, str | None] = {
        "none": None,
        "owner": grid.user_token,
        "other": await store.create_token("user", "bob"),
        "agent": grid.agent_token,
        "broker": await store.create_token("broker", f"broker-{rid}", rid),
        "broker_other": await store.create_token("broker", "b-o", other_rid),
        "admin": await store.create_token("admin", "root"),
        "revoked": revoked,
        "expired": expired,
    }
    return World(rid, jid, victim.id, tokens)


def concrete(template: str, world: World) -> str:
    """The template with the world's ids in place of ``{id}``."""
    if template.startswith("/v1/jobs/"):
        return template.replace("{id}", str(world.job_id))
    if template.startswith("/v1/tokens/"):
        return template.replace("{id}", str(world.victim_token_id))
    return template.replace("{id}", str(world.request_id))


async def call(
    session: aiohttp.ClientSession, method: str, url: str, token: str | None, body: Any
) -> int:
    """One call; the status (every error body in the one shape)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, Any] = {}
    if isinstance(body, str):
        kwargs["data"] = body
        headers["Content-Type"] = "application/toml"
    elif body is not None:
        kwargs["json"] = body
    async with session.request(method, url, headers=headers, **kwargs) as resp:
        if resp.status >= 400:
            ErrorBody.model_validate_json(await resp.read())
        return resp.status


@pytest.fixture
async def expired_token(grid: Grid) -> str:
    """A user token that expired a moment ago."""
    token = await grid.mq.store.create_token("user", "alice", expires_in_s=1)
    await asyncio.sleep(1.05)
    return token


async def test_master_queue_role_by_route(grid: Grid, expired_token: str) -> None:
    templates = set()
    for route in grid.mq.app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            info = route.resource.get_info()
            templates.add((route.method, str(info.get("path") or info.get("formatter"))))
    missing = templates - set(MQ_TABLE)
    assert not missing, f"routes without a row in MQ_TABLE (add one): {sorted(missing)}"
    wrong = []
    for (method, template), role in itertools.product(sorted(templates), ROLES):
        expected, body = MQ_TABLE[(method, template)]
        world = await make_world(grid, expired_token)
        url = grid.mq.url + concrete(template, world)
        got = await call(grid.session, method, url, world.tokens[role], body)
        if got not in expected[role]:
            wrong.append(f"{method} {template} as {role}: {got}, expected {expected[role]}")
    assert wrong == []


async def test_broker_and_registry_role_by_route(grid: Grid, expired_token: str) -> None:
    world = await make_world(grid, expired_token)
    async with grid.broker() as running:
        # granted, full once two agents hold the places, or 400: past the token check
        attach_ok = {200, 400, 409}
        broker_table: dict[tuple[str, str], tuple[Expect, Any]] = {
            # No master-queue token opens a broker, not even an agent's or the admin's:
            # only an attach ticket (checked below).
            ("POST", "/v1/attach"): (row(401), slot("role-table")),
            ("POST", "/v1/detach"): (row(401), {"agent_id": "nobody", "name": "nothing"}),
            ("POST", "/v1/sign"): (row(ANY, none=ANY, revoked=ANY, expired=ANY), {}),
            ("GET", "/healthz"): (row(200, none=200, revoked=200, expired=200), None),
            ("GET", "/metrics"): (row(200, none=200, revoked=200, expired=200), None),
            # The owner's routes take the owner's client certificate and no token at all.
            ("GET", "/v1/owner/scaling"): (row(401), None),
            ("POST", "/v1/owner/scale"): (row(401), {"n": 1}),
            ("POST", "/v1/owner/adapt"): (row(401), {"maximum": 1}),
            ("GET", "/dashboard"): (row(401), None),
            ("GET", "/dashboard/x"): (row(401), None),
            ("POST", "/dashboard"): (row(401), {}),
            ("POST", "/dashboard/x"): (row(401), {}),
        }
        present = {(m, p) for m, p in route_paths(running.app, world.request_id)}
        missing = present - set(broker_table)
        assert not missing, f"broker routes without a row (add one): {sorted(missing)}"
        wrong = []
        for (method, path), role in itertools.product(sorted(present), ROLES):
            expected, body = broker_table[(method, path)]
            got = await call(grid.session, method, running.url + path, world.tokens[role], body)
            if got not in expected[role]:
                wrong.append(f"broker {method} {path} as {role}: {got}, expected {expected[role]}")
        ticket = grid.ticket_for(running.url)
        for (method, path), ok in {
            ("POST", "/v1/attach"): attach_ok,
            ("POST", "/v1/detach"): {404},
        }.items():
            got = await call(
                grid.session, method, running.url + path, ticket, broker_table[(method, path)][1]
            )
            if got not in ok:
                wrong.append(f"broker {method} {path} with a ticket: {got}, expected {ok}")
    body = {"cluster": "c", "node": "n", "params": {"x": 1}}
    url = grid.registry.http_url + "/publish"
    for role in ROLES:  # no master-queue token, not even the admin's, publishes
        got = await call(grid.session, "POST", url, world.tokens[role], body)
        if got != 401:
            wrong.append(f"registry POST /publish as {role}: {got}, expected 401")
    for publish_token in grid.registry.app[registry_keys.SETTINGS].publish_tokens:
        assert await call(grid.session, "POST", url, publish_token, body) == 200
    assert wrong == []
