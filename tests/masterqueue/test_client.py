"""MasterQueueClient against a real master queue: every endpoint, errors, retries, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from podgrid.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServerError,
    Unauthorized,
    Unreachable,
)
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import JobState, RequestState
from tests.harness.ports import free_port
from tests.masterqueue.factories import job, request, request_text, slot
from tests.podgrid.mq_service import CONNECTION, FlakyProxy, RunningGrid, grid, workers

__all__ = ["grid"]  # the fixture, imported so pytest finds it here


async def test_request_lifecycle_through_every_request_endpoint(grid: RunningGrid) -> None:
    alice = await grid.client(await grid.token("user", "alice"))
    submitted = await alice.submit_request(request_text(min_workers=2, max_workers=3), "toml")
    assert (submitted.owner, submitted.state) == ("alice", RequestState.WAITING)
    assert submitted.request.max_workers == 3

    broker = await grid.broker(submitted.id)
    reply = await broker.report_state(
        submitted.id,
        "READY",
        workers=workers(2),
        address="tls://127.0.0.1:8786",
        connection=CONNECTION,
    )
    assert (reply.state, reply.cancel) == (RequestState.READY, False)

    detail = await alice.get_request(submitted.id)
    assert detail.state == RequestState.READY
    assert detail.worker_count == 2
    assert [w.host for w in detail.workers] == ["wn001.example.org", "wn002.example.org"]
    assert detail.connection is None  # secrets only through /connection
    timeline = [e.state for e in detail.timeline]
    assert timeline[0] == RequestState.WAITING
    assert timeline[-1] == RequestState.READY

    conn = await alice.connection(submitted.id)
    assert conn.connection is not None
    # Address and CA, plus how the owner checks its broker; no certificate, no key.
    assert conn.connection.broker_name == f"request-{submitted.id}.brokers.podgrid"
    assert (conn.connection.broker_ca or "").startswith("-----BEGIN CERTIFICATE")
    trust = {"broker_ca": None, "broker_name": None}
    assert conn.connection.model_copy(update=trust) == CONNECTION
    assert conn.connection.tls_client_cert is None
    assert conn.address == "tls://127.0.0.1:8786"

    cancelled = await alice.cancel_request(submitted.id)
    assert cancelled.state == RequestState.CANCELLED
    assert (await broker.report_state(submitted.id, "READY")).cancel is True
    with pytest.raises(Conflict) as info:
        await alice.cancel_request(submitted.id)
    assert info.value.status == 409
    assert info.value.code == "illegal_transition"


async def test_parsed_request_is_sent_as_json(grid: RunningGrid) -> None:
    alice = await grid.client(await grid.token("user", "alice"))
    parsed, _ = request(name="from-model", min_workers=3, max_workers=5)
    record = await alice.submit_request(parsed)
    assert record.request == parsed


async def test_listing_follows_the_pagination_cursor(grid: RunningGrid) -> None:
    alice = await grid.client(await grid.token("user", "alice"))
    bob = await grid.client(await grid.token("user", "bob"))
    ids = [(await alice.submit_request(request_text(name=f"r{i}"))).id for i in range(5)]
    await bob.submit_request(request_text(name="bobs"))
    await alice.cancel_request(ids[1])
    assert [r.id async for r in alice.list_requests(page_size=2)] == ids
    assert [r.id async for r in alice.list_requests(page_size=2, limit=3)] == ids[:3]
    waiting = [r.id async for r in alice.list_requests(["WAITING"], page_size=2)]
    assert waiting == [ids[0], *ids[2:]]
    assert [r.name async for r in bob.list_requests()] == ["bobs"]


async def test_batch_job_endpoints(grid: RunningGrid) -> None:
    alice = await grid.client(await grid.token("user", "alice"))
    agent = await grid.client(await grid.token("agent", "agent-1"))
    spec = job(command=["echo", "hello"], env={"A": "1"}, priority=5)
    submitted = await alice.submit_job(spec)
    assert (submitted.state, submitted.spec) == (JobState.WAITING, spec)
    other = await alice.submit_job(job(command=["sleep", "1"]))

    claim = await agent.match(slot("agent-1"))
    assert claim is not None
    assert claim.job.id == submitted.id  # priority first
    expires = await agent.heartbeat_job(claim.job.id, claim.lease_token, "STARTED")
    assert expires > datetime.now(UTC)
    finished = await agent.finish_job(claim.job.id, claim.lease_token, 0)
    assert finished.state == JobState.DONE
    assert finished.exit_code == 0

    shown = await alice.get_job(submitted.id)
    assert shown.state == JobState.DONE
    assert JobState.RUNNING not in [e.state for e in shown.history]
    assert [e.state for e in shown.history][-1] == JobState.DONE
    assert [j.id async for j in alice.list_jobs(page_size=1)] == [submitted.id, other.id]
    assert [j.id async for j in alice.list_jobs(["WAITING"])] == [other.id]

    killed = await alice.kill_job(other.id)
    assert killed.state == JobState.KILLED
    assert await agent.match(slot("agent-1")) is None  # 204: nothing left

    with pytest.raises(Conflict) as info:
        await agent.finish_job(claim.job.id, "not-the-lease", 1)
    assert info.value.code == "stale_lease"


async def test_each_error_status_has_its_exception(grid: RunningGrid) -> None:
    alice = await grid.client(await grid.token("user", "alice"))
    bob = await grid.client(await grid.token("user", "bob"))
    record = await alice.submit_request(request_text())

    wrong = await grid.client("pgt_not-a-token")
    with pytest.raises(Unauthorized) as unauthorized:
        await wrong.get_request(record.id)
    assert str(unauthorized.value) == "401 unauthorized: invalid token"

    with pytest.raises(Forbidden):
        await alice.match(slot())
    with pytest.raises(Forbidden):
        await alice.create_token("admin", "me")

    for call in (bob.get_request, bob.connection, bob.cancel_request):
        with pytest.raises(NotFound) as not_found:
            await call(record.id)
        assert not_found.value.message == f"request {record.id} not found"

    bad = '[server]\nname = "x"\nmin_workers = 4\nmax_workers = 2\n'
    with pytest.raises(BadRequest) as bad_request:
        await alice.submit_request(bad, "toml")
    assert bad_request.value.code == "invalid_request_config"
    assert bad_request.value.fields[0]["line"] == 4
    assert bad_request.value.fields[0]["loc"] == ["server.max_workers"]
    assert "must be >= min_workers (4), got 2" in str(bad_request.value)


async def test_tokens_and_health(grid: RunningGrid) -> None:
    token = await grid.admin.create_token("user", "carol")
    carol = await grid.client(token)
    assert (await carol.submit_request(request_text())).owner == "carol"
    assert await carol.healthz() == {"status": "ok"}
    me = await carol.whoami()
    assert (me.name, me.role, me.request_id) == ("carol", "user", None)


async def test_same_idempotency_key_creates_one_request(grid: RunningGrid) -> None:
    alice = await grid.client(await grid.token("user", "alice"))
    first = await alice.submit_request(request_text(), idempotency_key="k-1")
    again = await alice.submit_request(request_text(), idempotency_key="k-1")
    assert again.id == first.id
    assert [r.id async for r in alice.list_requests()] == [first.id]


async def test_a_lost_answer_is_retried_and_creates_one_request(grid: RunningGrid) -> None:
    token = await grid.token("user", "alice")
    async with FlakyProxy(grid.url) as proxy, MasterQueueClient(proxy.url, token) as alice:
        proxy.faults[("POST", "/v1/requests")] = ["lose", 503]
        record = await alice.submit_request(request_text())
        assert proxy.seen[("POST", "/v1/requests")] == 3
        proxy.faults[("POST", "/v1/jobs")] = ["lose"]
        submitted_job = await alice.submit_job(job())
        assert proxy.seen[("POST", "/v1/jobs")] == 2
        assert [r.id async for r in alice.list_requests()] == [record.id]
        assert [j.id async for j in alice.list_jobs()] == [submitted_job.id]


async def test_a_match_is_not_repeated_after_a_server_error(grid: RunningGrid) -> None:
    alice = await grid.client(await grid.token("user", "alice"))
    await alice.submit_job(job())
    token = await grid.token("agent", "agent-1")
    async with FlakyProxy(grid.url) as proxy, MasterQueueClient(proxy.url, token) as agent:
        proxy.faults[("POST", "/v1/match")] = ["lose"]
        with pytest.raises(ServerError) as info:
            await agent.match(slot())
        assert info.value.status == 502
        assert proxy.seen[("POST", "/v1/match")] == 1  # a second try could claim a second job
    assert [j.state async for j in alice.list_jobs()] == [JobState.ASSIGNED]


async def test_unreachable_service_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with MasterQueueClient(url, "t", retry_attempts=2) as client:
        with pytest.raises(Unreachable, match=f"master queue at {url} unreachable"):
            await client.get_request(1)
