"""An ambiguous commit on a claim: the claim's COMMIT reaches MariaDB, its answer does not.

A real MariaDB behind a loopback proxy that passes the claim's COMMIT to the server and then
drops the connection instead of relaying the OK (``tests.harness.mysql_proxy``). The store
retries the transaction; the retry must find the job its first attempt assigned and hand out
that claim, with the lease token the database holds. Before the fix the retry assigned the
next job: the first stayed ASSIGNED to an agent that never heard of it until its lease expired,
and its attempt was used up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from podgrid.masterqueue.store import Store
from podgrid.protocol import JobState
from tests.harness.mariadb import MariaDB
from tests.harness.mysql_proxy import MySQLProxy
from tests.masterqueue import factories as f


@pytest.fixture
async def direct(mariadb: MariaDB) -> AsyncIterator[tuple[Store, str]]:
    """A migrated store on a fresh database, and the database's name."""
    name = mariadb.create_database("podgrid_ambiguous")
    store = await Store.connect(mariadb.url(name))
    await store.migrate()
    try:
        yield store, name
    finally:
        await store.close()
        mariadb.sql(f"DROP DATABASE IF EXISTS `{name}`")


async def test_a_claim_whose_commit_answer_is_lost_returns_the_committed_job(
    mariadb: MariaDB, direct: tuple[Store, str]
) -> None:
    store, name = direct
    first = await store.submit_job("alice", f.job(command=["echo", "first"]))
    second = await store.submit_job("alice", f.job(command=["echo", "second"]))
    async with MySQLProxy((mariadb.host, mariadb.port)).running() as proxy:
        url = mariadb.url(name).replace(f":{mariadb.port}/", f":{proxy.port}/")
        via_proxy = await Store.connect(url, retry_deadline_s=30)
        try:
            await via_proxy.get_job(first.id)  # the pool holds a connection through the proxy
            proxy.lose_next_commit()
            claim = await via_proxy.claim_job(f.slot("agent-7"), lease_s=600)
        finally:
            await via_proxy.close()
        assert proxy.commits_lost == 1, "the fault was not injected"

    assert claim is not None
    assert claim.job.id == first.id, "the retry must return the job its first attempt took"
    assert claim.job.attempts == 1
    held = await store.get_job(first.id)
    assert (held.state, held.agent_id, held.attempts) == (JobState.ASSIGNED, "agent-7", 1)
    assert (await store.get_job(second.id)).state == JobState.WAITING, "no second job taken"
    # The agent holds the lease the database has: it can run and finish the job.
    await store.heartbeat_job(first.id, claim.lease_token, JobState.RUNNING)
    done = await store.finish_job(first.id, claim.lease_token, 0)
    assert done.state == JobState.DONE
    states = [e.state for e in await store.job_events(first.id)]
    assert states == [JobState.WAITING, JobState.ASSIGNED, JobState.RUNNING, JobState.DONE]


async def test_two_lost_commit_answers_in_a_row_still_give_one_claim(
    mariadb: MariaDB, direct: tuple[Store, str]
) -> None:
    store, name = direct
    first = await store.submit_job("alice", f.job(command=["echo", "first"]))
    second = await store.submit_job("alice", f.job(command=["echo", "second"]))
    async with MySQLProxy((mariadb.host, mariadb.port)).running() as proxy:
        url = mariadb.url(name).replace(f":{mariadb.port}/", f":{proxy.port}/")
        via_proxy = await Store.connect(url, retry_deadline_s=30)
        try:
            await via_proxy.get_job(first.id)  # past the engine's first-connect set-up
            proxy.lose_next_commit()
            proxy.lose_next_commit()  # the first retry's answer is lost too
            claim = await via_proxy.claim_job(f.slot("agent-8"), lease_s=600)
        finally:
            await via_proxy.close()
        assert proxy.commits_lost == 2
    assert claim is not None
    assert claim.job.id == first.id
    assert (await store.get_job(first.id)).attempts == 1
    assert (await store.get_job(second.id)).state == JobState.WAITING
