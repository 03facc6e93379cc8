"""The request, token, health and metrics endpoints of a real master queue on SQLite."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from podgrid.protocol import ConnectionInfo, RequestState
from tests.masterqueue.api_helpers import Api, Service, mq_service
from tests.masterqueue.factories import request_text

JDL = 'Name = "jdl-scan"; MinWorkers = 2; MaxWorkers = 3; MaxWait = 600; TTL = 14400;'


async def broker_api(svc: Service, request_id: int) -> Api:
    """A client holding a broker token made for ``request_id``."""
    return svc.admin.as_(await svc.admin.issue("broker", f"broker-{request_id}", request_id))


async def test_submit_toml_jdl_json_and_read_back(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user("alice")
        toml = await alice.submit()
        assert toml.status == 201
        assert toml.headers["Location"] == f"/v1/requests/{toml.body['id']}"
        assert toml.body["state"] == "WAITING"
        assert toml.body["owner"] == "alice"
        assert toml.body["request"]["worker"]["memory_mb"] == 2048
        jdl = await alice.call("POST", "/v1/requests", data=JDL)  # no Content-Type: sniffed
        assert jdl.status == 201
        assert jdl.body["request"]["max_workers"] == 3
        as_json = {"name": "json-scan", "min_workers": 1}
        js = await alice.call("POST", "/v1/requests", json=as_json)
        assert js.status == 201, js.body
        assert js.body["name"] == "json-scan"
        got = await alice.call("GET", f"/v1/requests/{jdl.body['id']}")
        assert got.body["name"] == "jdl-scan"
        assert got.body["timeline"][0]["state"] == "WAITING"
        assert got.body["connection"] is None


async def test_min_above_max_names_line_and_field(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user()
        answer = await alice.submit(min_workers=5, max_workers=2)
        assert answer.status == 400
        assert answer.body["error"] == "invalid_request_config"
        assert answer.body["fields"] == [
            {
                "loc": ["server.max_workers"],
                "msg": "must be >= min_workers (5), got 2",
                "line": 4,
                "column": None,
            }
        ]
        assert (
            answer.body["message"]
            == "request:4: server.max_workers: must be >= min_workers (5), got 2"
        )
        assert (await alice.call("GET", "/v1/requests")).body["requests"] == []


async def test_cap_and_garbage_configs_are_400_not_500(tmp_path: Path) -> None:
    async with mq_service(tmp_path, max_workers_cap=10) as svc:
        alice = await svc.user()
        capped = await alice.submit(min_workers=2, max_workers=11)
        assert capped.status == 400
        assert "cap of 10 workers" in capped.body["fields"][0]["msg"]
        for junk in (b"", b"[server\nname=", b"\xff\xfe", b"{}", b"null"):
            answer = await alice.call("POST", "/v1/requests", data=junk)
            assert answer.status == 400, (junk, answer.body)
            assert answer.body["error"] in ("invalid_request_config", "bad_encoding")


async def test_idempotent_submit_creates_one_request(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user()
        answers = await asyncio.gather(*(alice.submit(key="k-1") for _ in range(5)))
        assert {a.status for a in answers} == {201}
        assert len({a.body["id"] for a in answers}) == 1
        assert len((await alice.call("GET", "/v1/requests")).body["requests"]) == 1
        other = await alice.submit(key="k-1", name="different")
        assert other.status == 409
        assert other.body["error"] == "idempotency_conflict"
        bob = await svc.user("bob")  # keys are per owner
        assert (await bob.submit(key="k-1")).body["id"] != answers[0].body["id"]


async def test_listing_pages_and_filters(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice, bob = await svc.user("alice"), await svc.user("bob")
        mine = [(await alice.submit(name=f"r{i}")).body["id"] for i in range(5)]
        await bob.submit(name="bobs")
        await alice.call("DELETE", f"/v1/requests/{mine[1]}")
        seen: list[int] = []
        after = ""
        while True:
            page = (await alice.call("GET", f"/v1/requests?limit=2{after}")).body
            seen += [r["id"] for r in page["requests"]]
            if page["next"] is None:
                break
            after = f"&after={page['next']}"
        assert seen == mine
        cancelled = (await alice.call("GET", "/v1/requests?state=cancelled")).body["requests"]
        assert [r["id"] for r in cancelled] == [mine[1]]
        everyone = (await svc.admin.call("GET", "/v1/requests?limit=1000")).body["requests"]
        assert len(everyone) == 6
        bad = await alice.call("GET", "/v1/requests?limit=0")
        assert (bad.status, bad.body["error"]) == (400, "invalid_query")
        bad = await alice.call("GET", "/v1/requests?state=SLEEPING")
        assert (bad.status, bad.body["fields"][0]["loc"]) == (400, ["query", "state"])


async def test_tokens_missing_wrong_and_roles(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        nobody = svc.admin.as_(None)
        missing = await nobody.call("GET", "/v1/requests")
        assert (missing.status, missing.body["error"]) == (401, "unauthorized")
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = await svc.admin.as_("pgt_not-a-token").call("GET", "/v1/requests")
        assert (wrong.status, wrong.body["message"]) == (401, "invalid token")
        basic = await nobody.call("GET", "/v1/jobs", headers={"Authorization": "Basic eDp5"})
        assert basic.status == 401
        agent = svc.admin.as_(await svc.admin.issue("agent", "agent-1"))
        forbidden = await agent.submit()
        assert (forbidden.status, forbidden.body["error"]) == (403, "forbidden")
        alice = await svc.user()
        assert (await alice.call("POST", "/v1/match", json={})).status == 403
        made = await alice.call("POST", "/v1/tokens", json={"role": "admin", "name": "x"})
        assert (made.status, made.body["error"]) == (403, "forbidden")
        bad_role = await svc.admin.call("POST", "/v1/tokens", json={"role": "root", "name": "x"})
        assert (bad_role.status, bad_role.body["fields"][0]["loc"]) == (400, ["role"])
        assert (await nobody.call("GET", "/healthz")).body == {"status": "ok"}
        me = (await alice.call("GET", "/v1/whoami")).body
        assert me == {"name": "alice", "role": "user", "request_id": None}
        assert (await nobody.call("GET", "/v1/whoami")).status == 401


async def test_cross_user_access_is_404(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice, bob = await svc.user("alice"), await svc.user("bob")
        rid = (await alice.submit()).body["id"]
        for method, path in (
            ("GET", f"/v1/requests/{rid}"),
            ("GET", f"/v1/requests/{rid}/connection"),
            ("DELETE", f"/v1/requests/{rid}"),
        ):
            answer = await bob.call(method, path)
            assert (answer.status, answer.body["error"]) == (404, "not_found"), path
            assert answer.body["message"] == f"request {rid} not found"
            missing = await bob.call(method, path.replace(f"requests/{rid}", "requests/999"))
            assert missing.body["message"] == "request 999 not found"  # same answer: no leak
        assert (await bob.call("GET", "/v1/requests")).body["requests"] == []
        assert await state_is(alice, rid, "WAITING")


async def state_is(api: Api, request_id: int, state: str) -> bool:
    """Whether the request is in ``state``."""
    return (await api.call("GET", f"/v1/requests/{request_id}")).body["state"] == state


async def test_connection_is_owner_only(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        broker = await broker_api(svc, rid)
        await svc.store.transition(rid, RequestState.STARTING)
        conn = {"address": "tls://10.0.0.1:8786", "tls_client_key": "SECRET"}
        report = {"state": "READY", "workers": [], "connection": conn}
        assert (await broker.call("POST", f"/v1/requests/{rid}/state", json=report)).status == 200
        owner = await alice.call("GET", f"/v1/requests/{rid}/connection")
        expected = ConnectionInfo.model_validate(conn).model_dump(mode="json")
        # The master queue adds how the owner checks its broker (its CA, the request's name).
        assert owner.body["connection"].pop("broker_ca").startswith("-----BEGIN CERTIFICATE")
        assert owner.body["connection"].pop("broker_name") == f"request-{rid}.brokers.podgrid"
        expected = {k: v for k, v in expected.items() if k not in ("broker_ca", "broker_name")}
        assert owner.body == {"id": rid, "state": "READY", "address": None, "connection": expected}
        assert "SECRET" not in json.dumps(owner.body)  # a key a broker sends is never kept
        admin = await svc.admin.call("GET", f"/v1/requests/{rid}/connection")
        assert admin.status == 403
        for api in (alice, svc.admin, broker):
            record = await api.call("GET", f"/v1/requests/{rid}")
            assert "SECRET" not in json.dumps(record.body)
            listing = await api.call("GET", "/v1/requests")
            assert "SECRET" not in json.dumps(listing.body)


async def test_broker_reports_and_learns_of_cancel(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        other = (await alice.submit(name="other")).body["id"]
        broker = await broker_api(svc, rid)
        path = f"/v1/requests/{rid}/state"
        await svc.store.transition(rid, RequestState.STARTING)
        ok = await broker.call("POST", path, json={"state": "PUBLISHING", "address": "https://a"})
        assert ok.body == {
            "id": rid,
            "state": "PUBLISHING",
            "reason": "reported by the broker",
            "cancel": False,
        }
        back = await broker.call("POST", path, json={"state": "STARTING"})
        assert (back.status, back.body["error"]) == (409, "illegal_transition")
        foreign = await broker.call("POST", f"/v1/requests/{other}/state", json={"state": "READY"})
        assert foreign.status == 403
        assert (await broker.call("GET", f"/v1/requests/{other}")).status == 404
        assert (await broker.call("GET", f"/v1/requests/{rid}")).body["address"] == "https://a"
        bad = await broker.call("POST", path, json={"state": "READY", "workers": [{"name": 1}]})
        assert (bad.status, bad.body["error"]) == (400, "invalid_body")
        assert ["workers", 0, "name"] in [f["loc"] for f in bad.body["fields"]]
        assert (await alice.call("DELETE", f"/v1/requests/{rid}")).body["state"] == "CANCELLED"
        told = await broker.call("POST", path, json={"state": "READY"})
        assert told.body["cancel"] is True
        assert told.body["state"] == "CANCELLED"
        again = await alice.call("DELETE", f"/v1/requests/{rid}")
        assert (again.status, again.body["error"]) == (409, "illegal_transition")
        assert again.body["fields"] == [
            {"loc": ["state"], "msg": "is CANCELLED; cannot move to CANCELLED"}
        ]


async def test_bad_json_and_paths(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        bad = await svc.admin.call("POST", "/v1/tokens", data='{"role": "user",')
        assert bad.status == 400
        assert bad.body["error"] == "bad_json"
        assert bad.body["fields"][0]["line"] == 1
        deep = await svc.admin.call("POST", "/v1/tokens", data="[" * 100_000)
        assert (deep.status, deep.body["error"]) == (400, "bad_json")
        arr = await svc.admin.call("POST", "/v1/tokens", json=["user"])
        assert (arr.status, arr.body["message"]) == (400, "the body must be a JSON object")
        assert (await svc.admin.call("GET", "/v1/requests/abc")).status == 404
        assert (await svc.admin.call("GET", "/v1/requests/0")).status == 404
        nope = await svc.admin.call("PUT", "/v1/requests")
        assert (nope.status, nope.body["error"]) == (405, "method_not_allowed")
        huge = await svc.admin.call(
            "POST", "/v1/requests", data=io.BytesIO(b"x" * (2 * 1024 * 1024))
        )
        assert (huge.status, huge.body["error"]) == (413, "body_too_large")
        assert "X-Request-Id" in huge.headers


async def test_metrics_show_states_and_latency(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user()
        await alice.submit()
        await alice.submit(name="b")
        text = (await svc.admin.as_(None).call("GET", "/metrics")).body
        assert 'podgrid_masterqueue_requests{state="WAITING"} 2.0' in text
        assert 'podgrid_masterqueue_jobs{state="WAITING"} 0.0' in text
        count = "podgrid_masterqueue_http_request_duration_seconds_count"
        assert f'{count}{{method="POST",route="/v1/requests",status="201"}} 2.0' in text
        assert "podgrid_masterqueue_sweeps_total" in text


async def test_admin_may_create_broker_tokens_only_for_existing_requests(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        missing = await svc.admin.call(
            "POST", "/v1/tokens", json={"role": "broker", "name": "b", "request_id": 42}
        )
        assert (missing.status, missing.body["message"]) == (404, "request 42 not found")
        user_for_request = await svc.admin.call(
            "POST", "/v1/tokens", json={"role": "user", "name": "u", "request_id": 1}
        )
        assert user_for_request.status == 400
        text = request_text()
        assert (await svc.admin.submit(text)).status == 201  # an admin may submit too


async def test_unexpected_failure_is_a_500_with_request_id_and_the_service_goes_on(
    tmp_path: Path,
) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user()
        async with svc.store.engine.begin() as conn:  # a damaged schema: not the client's fault
            await conn.exec_driver_sql("DROP TABLE job_events")
        broken = await alice.call("POST", "/v1/jobs", json={"command": ["x"]})
        assert broken.status == 500
        assert broken.body["error"] == "internal_error"
        assert broken.body["message"] == (
            f"internal error (request id {broken.headers['X-Request-Id']})"
        )
        assert (await alice.submit()).status == 201
