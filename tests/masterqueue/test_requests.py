"""Server requests in the store: lifecycle, timeline, idempotent submission, ownership."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from podgrid.masterqueue.errors import (
    IdempotencyConflict,
    IllegalTransition,
    NotOwner,
    RecordNotFound,
)
from podgrid.masterqueue.store import Store
from podgrid.protocol import ConnectionInfo, WorkerInfo
from podgrid.protocol import RequestState as S
from tests.masterqueue import factories as f


async def test_submit_returns_a_waiting_request_with_its_settings(store: Store) -> None:
    req, text = f.request(name="dimuon", min_workers=3, max_workers=8)
    rec = await store.submit_request("alice", req, text)
    again = await store.get_request(rec.id)
    assert again == rec
    assert (rec.owner, rec.name, rec.state) == ("alice", "dimuon", S.WAITING)
    assert rec.request.min_workers == 3
    assert rec.request.max_workers == 8
    assert rec.request.worker.packages == ("ROOT::v6-32",)
    assert rec.created_at.tzinfo is not None
    assert [e.state for e in await store.request_events(rec.id)] == [S.WAITING]


async def test_full_lifecycle_is_recorded_in_the_timeline(store: Store) -> None:
    req, text = f.request()
    rec = await store.submit_request("alice", req, text)
    for state in (S.STARTING, S.PUBLISHING, S.READY, S.FULL, S.READY, S.FULL, S.DONE):
        rec = await store.transition(rec.id, state, reason=f"to {state}")
        assert rec.state == state
    events = await store.request_events(rec.id)
    assert [e.state for e in events] == [
        S.WAITING,
        S.STARTING,
        S.PUBLISHING,
        S.READY,
        S.FULL,
        S.READY,
        S.FULL,
        S.DONE,
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert events[-1].reason == "to DONE"


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ([], S.READY),  # WAITING cannot jump to READY
        ([], S.DONE),
        ([S.STARTING], S.WAITING),  # never backwards
        ([S.STARTING, S.PUBLISHING, S.READY, S.DONE], S.CANCELLED),  # final is final
        ([S.CANCELLED], S.STARTING),
        ([S.STARTING], S.STARTING),  # not to itself
    ],
)
async def test_illegal_transitions_are_refused_and_change_nothing(
    store: Store, path: list[S], wanted: S
) -> None:
    req, text = f.request()
    rec = await store.submit_request("alice", req, text)
    for state in path:
        rec = await store.transition(rec.id, state)
    with pytest.raises(IllegalTransition) as info:
        await store.transition(rec.id, wanted)
    assert (info.value.current, info.value.wanted) == (rec.state.value, wanted.value)
    assert (await store.get_request(rec.id)).state == rec.state
    assert len(await store.request_events(rec.id)) == len(path) + 1


@pytest.mark.parametrize("abort", [S.CANCELLED, S.EXPIRED, S.FAILED])
@pytest.mark.parametrize("at", [S.WAITING, S.STARTING, S.PUBLISHING, S.READY, S.FULL])
async def test_any_live_state_can_be_aborted_with_a_reason(store: Store, abort: S, at: S) -> None:
    req, text = f.request()
    rec = await store.submit_request("alice", req, text)
    for state in (S.STARTING, S.PUBLISHING, S.READY, S.FULL):
        if rec.state == at:
            break
        rec = await store.transition(rec.id, state)
    rec = await store.transition(rec.id, abort, reason="because")
    assert (rec.state, rec.reason) == (abort, "because")


async def test_expected_state_makes_two_launchers_race_safely(store: Store) -> None:
    req, text = f.request()
    rec = await store.submit_request("alice", req, text)
    first = await store.transition(rec.id, S.STARTING, expected=S.WAITING, master_host="mh1")
    with pytest.raises(IllegalTransition):
        await store.transition(rec.id, S.STARTING, expected=S.WAITING, master_host="mh2")
    assert first.master_host == "mh1"
    assert (await store.get_request(rec.id)).master_host == "mh1"


async def test_repeated_idempotency_key_returns_the_same_request(store: Store) -> None:
    req, text = f.request()
    first = await store.submit_request("alice", req, text, idempotency_key="k-1")
    second = await store.submit_request("alice", req, text, idempotency_key="k-1")
    other_owner = await store.submit_request("bob", req, text, idempotency_key="k-1")
    assert second.id == first.id
    assert other_owner.id != first.id
    assert len(await store.list_requests(owner="alice")) == 1
    changed, changed_text = f.request(name="other")
    with pytest.raises(IdempotencyConflict, match="k-1"):
        await store.submit_request("alice", changed, changed_text, idempotency_key="k-1")


async def test_broker_report_walks_the_chain_and_records_workers(store: Store) -> None:
    req, text = f.request()
    rec = await store.submit_request("alice", req, text)
    await store.transition(rec.id, S.STARTING)
    await store.transition(rec.id, S.PUBLISHING)
    now = datetime.now(UTC)
    workers = [
        WorkerInfo(name=f"w{i}", host=f"wn{i}", site="CERN", agent_id=f"a{i}", attached_at=now)
        for i in range(4)
    ]
    conn = ConnectionInfo(address="tls://127.0.0.1:8786", tls_ca="PEM")
    rec = await store.broker_report(rec.id, S.FULL, workers, "https://mh1:9000", conn)
    assert rec.state == S.FULL
    assert rec.worker_count == 4
    assert [w.host for w in rec.workers] == ["wn0", "wn1", "wn2", "wn3"]
    assert rec.connection == conn
    assert rec.public().connection is None
    assert rec.last_heartbeat is not None
    states = [e.state for e in await store.request_events(rec.id)]
    assert states == [S.WAITING, S.STARTING, S.PUBLISHING, S.READY, S.FULL]
    await store.cancel_request(rec.id, "alice")
    with pytest.raises(IllegalTransition):  # tells the broker to shut down
        await store.broker_report(rec.id, S.FULL, workers)


async def test_only_the_owner_cancels_and_missing_ids_are_not_found(store: Store) -> None:
    req, text = f.request()
    rec = await store.submit_request("alice", req, text)
    with pytest.raises(NotOwner):
        await store.cancel_request(rec.id, "mallory")
    assert (await store.get_request(rec.id)).state == S.WAITING
    cancelled = await store.cancel_request(rec.id, "alice")
    assert cancelled.state == S.CANCELLED
    assert cancelled.reason == "cancelled by the owner"
    with pytest.raises(RecordNotFound):
        await store.get_request(rec.id + 1000)
    with pytest.raises(RecordNotFound):
        await store.transition(rec.id + 1000, S.STARTING)


async def test_listing_filters_by_owner_and_state_and_pages(store: Store) -> None:
    req, text = f.request()
    ids = [(await store.submit_request("alice", req, text)).id for _ in range(5)]
    await store.submit_request("bob", req, text)
    await store.transition(ids[0], S.STARTING)
    page1 = await store.list_requests(owner="alice", limit=3)
    page2 = await store.list_requests(owner="alice", limit=3, after_id=page1[-1].id)
    assert [r.id for r in page1 + page2] == ids
    starting = await store.list_requests(states=[S.STARTING])
    assert [r.id for r in starting] == [ids[0]]


async def test_request_sweep_expires_and_fails_with_reasons(store: Store) -> None:
    req, text = f.request(max_wait="10m", ttl="1h")
    waiting = await store.submit_request("alice", req, text)
    ready = await store.submit_request("alice", req, text)
    silent = await store.submit_request("alice", req, text)
    for state in (S.STARTING, S.PUBLISHING, S.READY):
        await store.transition(ready.id, state)
    await store.broker_report(ready.id, S.READY, [])
    await store.transition(silent.id, S.STARTING)
    now = datetime.now(UTC)
    assert await store.expire_requests(now, heartbeat_timeout_s=60) == []
    swept = await store.expire_requests(now + timedelta(minutes=11), heartbeat_timeout_s=3600)
    assert {(s.id, s.state) for s in swept} == {(waiting.id, "EXPIRED"), (silent.id, "EXPIRED")}
    assert "max_wait" in (await store.get_request(waiting.id)).reason  # type: ignore[operator]
    swept = await store.expire_requests(now + timedelta(minutes=20), heartbeat_timeout_s=60)
    assert [(s.id, s.state) for s in swept] == [(ready.id, "FAILED")]
    assert "heartbeat" in (await store.get_request(ready.id)).reason  # type: ignore[operator]
    assert await store.expire_requests(now + timedelta(hours=2)) == []


async def test_ttl_over_expires_a_running_cluster(store: Store) -> None:
    req, text = f.request(max_wait="1m", ttl="2m")
    rec = await store.submit_request("alice", req, text)
    for state in (S.STARTING, S.PUBLISHING, S.READY):
        await store.transition(rec.id, state)
    swept = await store.expire_requests(datetime.now(UTC) + timedelta(minutes=3), 3600)
    assert [(s.id, s.state) for s in swept] == [(rec.id, "EXPIRED")]
    assert "ttl" in (await store.get_request(rec.id)).reason  # type: ignore[operator]


async def test_purge_removes_only_old_finished_records(store: Store) -> None:
    req, text = f.request()
    old = await store.submit_request("alice", req, text, idempotency_key="old")
    live = await store.submit_request("alice", req, text)
    await store.cancel_request(old.id, "alice")
    job = await store.submit_job("alice", f.job())
    await store.kill_job(job.id, "alice")
    assert await store.purge_finished(datetime.now(UTC) - timedelta(days=1)) == (0, 0)
    assert await store.purge_finished(datetime.now(UTC) + timedelta(seconds=1)) == (1, 1)
    with pytest.raises(RecordNotFound):
        await store.get_request(old.id)
    with pytest.raises(RecordNotFound):
        await store.get_job(job.id)
    assert (await store.get_request(live.id)).state == S.WAITING
