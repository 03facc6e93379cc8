"""An agent's first heartbeat and a short job's finish, at the same moment, on MariaDB.

A job that ends within milliseconds has its finish on the way while the agent's first
heartbeat (ASSIGNED→STARTED) is still in flight. Both hold the job's lease; the finish must
be taken (DONE), never refused as a lost lease: that refusal left the finished job to wait for
its lease to expire and run a second time (found by the MariaDB-restart fault test).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from podgrid.masterqueue.store import Store
from podgrid.protocol import JobState
from tests.harness.mariadb import MariaDB
from tests.masterqueue import factories as f

ROUNDS = 40


@pytest.fixture
async def store(mariadb: MariaDB) -> AsyncIterator[Store]:
    """A migrated store on a fresh MariaDB database."""
    name = mariadb.create_database("podgrid_lease_race")
    s = await Store.connect(mariadb.url(name))
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
        mariadb.sql(f"DROP DATABASE IF EXISTS `{name}`")


async def test_a_finish_racing_the_first_heartbeat_is_never_a_lost_lease(store: Store) -> None:
    for _ in range(ROUNDS):
        job = await store.submit_job("alice", f.job())
        claim = await store.claim_job(f.slot("racer"), lease_s=60)
        assert claim is not None
        beat, done = await asyncio.gather(
            store.heartbeat_job(job.id, claim.lease_token, JobState.STARTED),
            store.finish_job(job.id, claim.lease_token, 0),
            return_exceptions=True,
        )
        assert not isinstance(done, BaseException), done
        assert done.state == JobState.DONE
        final = await store.get_job(job.id)
        assert (final.state, final.attempts) == (JobState.DONE, 1)
        # The heartbeat may lose (the job is final by then), never the finish.
        assert not isinstance(beat, BaseException) or "DONE" in str(beat)
