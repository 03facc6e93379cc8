"""Batch jobs in the store: matching, leases, fencing, kill, lease expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from podgrid.masterqueue.errors import IllegalTransition, NotOwner, RecordNotFound, StaleLease
from podgrid.masterqueue.store import Store
from podgrid.protocol import JobState as J
from tests.masterqueue import factories as f

LATER = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("spec", "slot", "fits"),
    [
        ({"cores": 8}, {"cores": 8}, True),
        ({"cores": 9}, {"cores": 8}, False),
        ({"memory_mb": 4000}, {"memory_mb": 3999}, False),
        ({"ttl_s": 7200}, {"ttl_s": 3600}, False),
        ({"ttl_s": 3600}, {"ttl_s": 3600}, True),
        ({"packages": ("ROOT::v6-32", "Geant4")}, {"packages": ("ROOT::v6-32",)}, False),
        (
            {"packages": ("ROOT::v6-32", "Geant4")},
            {"packages": ("Geant4", "ROOT::v6-32", "X")},
            True,
        ),
        ({"packages": ("ROOT::v6",)}, {"packages": ("ROOT::v6-32",)}, False),  # no prefix match
        ({"packages": ()}, {"packages": ()}, True),
        ({"sites": ("GSI", "CERN")}, {"site": "CERN"}, True),
        ({"sites": ("GSI",)}, {"site": "CERN"}, False),
        ({"sites": ("CERN_X",)}, {"site": "CERN"}, False),  # no partial site match
        ({"sites": ("CERN",)}, {"site": "cern"}, False),
        ({"sites": ()}, {"site": "Anywhere"}, True),
    ],
)
async def test_claim_honours_requirements(
    store: Store, spec: dict[str, object], slot: dict[str, object], fits: bool
) -> None:
    job = await store.submit_job("alice", f.job(**spec))
    claim = await store.claim_job(f.slot(**slot), lease_s=30)
    if fits:
        assert claim is not None
        assert claim.job.id == job.id
        assert claim.job.state == J.ASSIGNED
        assert claim.job.agent_id == "agent-1"
    else:
        assert claim is None
        assert (await store.get_job(job.id)).state == J.WAITING


async def test_claim_order_is_priority_then_age(store: Store) -> None:
    low_old = await store.submit_job("alice", f.job(priority=0))
    high = await store.submit_job("alice", f.job(priority=10))
    low_new = await store.submit_job("alice", f.job(priority=0))
    too_big = await store.submit_job("alice", f.job(priority=99, cores=64))
    order = []
    while (claim := await store.claim_job(f.slot(), lease_s=30)) is not None:
        order.append(claim.job.id)
    assert order == [high.id, low_old.id, low_new.id]
    assert (await store.get_job(too_big.id)).state == J.WAITING


async def test_heartbeat_and_finish_move_the_job_through_agent_states(store: Store) -> None:
    job = await store.submit_job("alice", f.job(command=["sh", "-c", "exit 3"], env={"A": "1"}))
    claim = await store.claim_job(f.slot(), lease_s=60)
    assert claim is not None
    assert claim.lease_s == 60
    first = await store.heartbeat_job(job.id, claim.lease_token, J.STARTED)
    second = await store.heartbeat_job(job.id, claim.lease_token, J.RUNNING)
    assert second >= first > datetime.now(UTC) + timedelta(seconds=50)
    assert (await store.get_job(job.id)).state == J.RUNNING
    await store.heartbeat_job(job.id, claim.lease_token, J.STARTED)  # never backwards
    assert (await store.get_job(job.id)).state == J.RUNNING
    done = await store.finish_job(job.id, claim.lease_token, 3)
    assert (done.state, done.exit_code, done.spec.env) == (J.ERROR_E, 3, {"A": "1"})
    assert await store.finish_job(job.id, claim.lease_token, 3) == done  # a retried finish
    events = await store.job_events(job.id)
    assert [e.state for e in events] == [J.WAITING, J.ASSIGNED, J.STARTED, J.RUNNING, J.ERROR_E]
    assert events[1].agent_id == "agent-1"


async def test_lease_expiry_requeues_then_expires_after_max_attempts(store: Store) -> None:
    job = await store.submit_job("alice", f.job(max_attempts=2))
    tokens = []
    for attempt in (1, 2):
        claim = await store.claim_job(f.slot(f"agent-{attempt}"), lease_s=30)
        assert claim is not None
        assert claim.job.attempts == attempt
        tokens.append(claim.lease_token)
        assert await store.expire_leases(datetime.now(UTC)) == []  # lease still valid
        swept = await store.expire_leases(datetime.now(UTC) + LATER)
        assert [(s.id, s.state) for s in swept] == [
            (job.id, "WAITING" if attempt == 1 else "EXPIRED")
        ]
    assert tokens[0] != tokens[1]
    final = await store.get_job(job.id)
    assert (final.state, final.attempts) == (J.EXPIRED, 2)
    assert await store.claim_job(f.slot(), lease_s=30) is None
    states = [e.state for e in await store.job_events(job.id)]
    assert states == [J.WAITING, J.ASSIGNED, J.WAITING, J.ASSIGNED, J.EXPIRED]


async def test_heartbeat_keeps_the_lease_from_the_sweep(store: Store) -> None:
    job = await store.submit_job("alice", f.job())
    claim = await store.claim_job(f.slot(), lease_s=1)
    assert claim is not None
    expires = await store.heartbeat_job(job.id, claim.lease_token)
    assert await store.expire_leases(expires - timedelta(milliseconds=10)) == []
    assert (await store.get_job(job.id)).state == J.RUNNING


async def test_stale_agent_is_fenced_off_and_the_job_counts_once(store: Store) -> None:
    job = await store.submit_job("alice", f.job())
    stale = await store.claim_job(f.slot("slow-agent"), lease_s=5)
    assert stale is not None
    await store.expire_leases(datetime.now(UTC) + LATER)
    with pytest.raises(StaleLease):
        await store.heartbeat_job(job.id, stale.lease_token)
    fresh = await store.claim_job(f.slot("fresh-agent"), lease_s=30)
    assert fresh is not None
    assert fresh.job.id == job.id
    with pytest.raises(StaleLease):
        await store.heartbeat_job(job.id, stale.lease_token)
    with pytest.raises(StaleLease):
        await store.finish_job(job.id, stale.lease_token, 0)
    done = await store.finish_job(job.id, fresh.lease_token, 0)
    with pytest.raises(StaleLease):  # even after the job finished
        await store.finish_job(job.id, stale.lease_token, 0)
    assert (done.state, done.agent_id) == (J.DONE, "fresh-agent")
    events = await store.job_events(job.id)
    assert [e.agent_id for e in events if e.state == J.DONE] == ["fresh-agent"]


async def test_kill_by_owner_fences_the_running_agent(store: Store) -> None:
    job = await store.submit_job("alice", f.job())
    claim = await store.claim_job(f.slot(), lease_s=30)
    assert claim is not None
    with pytest.raises(NotOwner):
        await store.kill_job(job.id, "mallory")
    killed = await store.kill_job(job.id, "alice")
    assert killed.state == J.KILLED
    with pytest.raises(StaleLease) as info:
        await store.heartbeat_job(job.id, claim.lease_token)
    assert info.value.state == "KILLED"
    with pytest.raises(IllegalTransition):
        await store.kill_job(job.id, "alice")
    with pytest.raises(RecordNotFound):
        await store.get_job(job.id + 1000)


async def test_job_idempotency_and_listing(store: Store) -> None:
    first = await store.submit_job("alice", f.job(), idempotency_key="j1")
    again = await store.submit_job("alice", f.job(), idempotency_key="j1")
    other = await store.submit_job("bob", f.job())
    assert again.id == first.id
    assert [j.id for j in await store.list_jobs(owner="alice")] == [first.id]
    assert [j.id for j in await store.list_jobs(after_id=first.id)] == [other.id]
    assert [j.id for j in await store.list_jobs(states=[J.DONE])] == []


async def test_heartbeat_only_reports_agent_states(store: Store) -> None:
    await store.submit_job("alice", f.job())
    claim = await store.claim_job(f.slot(), lease_s=30)
    assert claim is not None
    with pytest.raises(ValueError, match="STARTED or RUNNING"):
        await store.heartbeat_job(claim.job.id, claim.lease_token, J.DONE)
    assert (await store.get_job(claim.job.id)).state == J.ASSIGNED


async def test_in_memory_sqlite_store_works_for_quick_local_use() -> None:
    store = await Store.connect("sqlite+aiosqlite://")
    try:
        await store.migrate()
        job = await store.submit_job("alice", f.job())
        claim = await store.claim_job(f.slot(), lease_s=30)
        assert claim is not None
        assert claim.job.id == job.id
    finally:
        await store.close()
