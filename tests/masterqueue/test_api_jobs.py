"""Batch jobs and the matcher through HTTP: SQLite and a real MariaDB."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from podgrid.masterqueue.schema import job_events, jobs
from tests.masterqueue.api_helpers import Api, Service, mq_service

SLOT: dict[str, Any] = {
    "agent_id": "agent-1",
    "site": "CERN",
    "ce": "ce01",
    "host": "wn001",
    "cores": 4,
    "memory_mb": 8000,
    "ttl_s": 86400,
    "packages": ["ROOT::v6-32"],
}


async def agent_api(svc: Service, name: str = "agent-1") -> Api:
    """A client holding an agent token."""
    return svc.admin.as_(await svc.admin.issue("agent", name))


async def test_job_lifecycle_through_http(tmp_path: Path, db_url: str) -> None:
    async with mq_service(tmp_path, db_url=db_url) as svc:
        alice, agent = await svc.user("alice"), await agent_api(svc)
        low = await alice.call("POST", "/v1/jobs", json={"command": ["echo", "low"]})
        assert low.status == 201
        assert low.body["state"] == "WAITING"
        assert low.headers["Location"] == f"/v1/jobs/{low.body['id']}"
        high = await alice.call("POST", "/v1/jobs", json={"command": ["echo"], "priority": 5})
        big = await alice.call("POST", "/v1/jobs", json={"command": ["x"], "cores": 64})
        elsewhere = await alice.call("POST", "/v1/jobs", json={"command": ["x"], "sites": ["FZK"]})
        claim = await agent.call("POST", "/v1/match", json=SLOT)
        assert claim.status == 200
        assert claim.body["job"]["id"] == high.body["id"]  # priority first
        assert claim.body["job"]["state"] == "ASSIGNED"
        assert claim.body["lease_s"] == 60.0
        token = claim.body["lease_token"]
        job_id = high.body["id"]
        beat = await agent.call(
            "POST", f"/v1/jobs/{job_id}/heartbeat", json={"lease_token": token, "state": "STARTED"}
        )
        assert beat.status == 200
        assert beat.body["id"] == job_id
        done = await agent.call(
            "POST", f"/v1/jobs/{job_id}/finish", json={"lease_token": token, "exit_code": 0}
        )
        assert (done.body["state"], done.body["exit_code"]) == ("DONE", 0)
        second = await agent.call("POST", "/v1/match", json=SLOT)
        assert second.body["job"]["id"] == low.body["id"]
        failed = await agent.call(
            "POST",
            f"/v1/jobs/{low.body['id']}/finish",
            json={"lease_token": second.body["lease_token"], "exit_code": 2},
        )
        assert failed.body["state"] == "ERROR_E"
        nothing = await agent.call("POST", "/v1/match", json=SLOT)
        assert (nothing.status, nothing.body) == (204, None)  # big and elsewhere do not fit
        fzk = await agent.call("POST", "/v1/match", json={**SLOT, "site": "FZK"})
        assert fzk.body["job"]["id"] == elsewhere.body["id"]
        history = (await alice.call("GET", f"/v1/jobs/{job_id}")).body["history"]
        assert [h["state"] for h in history] == ["WAITING", "ASSIGNED", "STARTED", "DONE"]
        assert history[1]["agent_id"] == "agent-1"
        killed = await alice.call("DELETE", f"/v1/jobs/{big.body['id']}")
        assert killed.body["state"] == "KILLED"
        again = await alice.call("DELETE", f"/v1/jobs/{big.body['id']}")
        assert (again.status, again.body["error"]) == (409, "illegal_transition")
        states = (await alice.call("GET", "/v1/jobs?state=DONE,ERROR_E")).body["jobs"]
        assert sorted(j["id"] for j in states) == sorted([job_id, low.body["id"]])


async def test_bad_job_bodies_name_the_field(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice, agent = await svc.user(), await agent_api(svc)
        shell = await alice.call("POST", "/v1/jobs", json={"command": "rm -rf /"})
        assert (shell.status, shell.body["fields"][0]["loc"]) == (400, ["command"])
        extra = await alice.call("POST", "/v1/jobs", json={"command": ["x"], "shell": True})
        assert extra.body["fields"] == [
            {"loc": ["shell"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        ]
        bad = await alice.call("POST", "/v1/jobs", data="{'command': ['x']}")
        assert (bad.status, bad.body["error"]) == (400, "bad_json")
        slot = await agent.call("POST", "/v1/match", json={**SLOT, "cores": 0})
        assert (slot.status, slot.body["fields"][0]["loc"]) == (400, ["cores"])
        finish = await agent.call("POST", "/v1/jobs/1/finish", json={"lease_token": "x"})
        assert (finish.status, finish.body["fields"][0]["loc"]) == (400, ["exit_code"])
        ghost = await agent.call(
            "POST", "/v1/jobs/77/finish", json={"lease_token": "x", "exit_code": 0}
        )
        assert (ghost.status, ghost.body["message"]) == (404, "job 77 not found")


async def test_cross_user_jobs_are_404(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice, bob = await svc.user("alice"), await svc.user("bob")
        job_id = (await alice.call("POST", "/v1/jobs", json={"command": ["x"]})).body["id"]
        for method in ("GET", "DELETE"):
            answer = await bob.call(method, f"/v1/jobs/{job_id}")
            assert (answer.status, answer.body["message"]) == (404, f"job {job_id} not found")
        assert (await bob.call("GET", "/v1/jobs")).body == {"jobs": [], "next": None}
        assert (await alice.call("GET", f"/v1/jobs/{job_id}")).body["state"] == "WAITING"
        assert (await svc.admin.call("GET", f"/v1/jobs/{job_id}")).status == 200


async def test_idempotent_job_submit(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user()
        headers = {"Idempotency-Key": "job-7"}
        first, second = await asyncio.gather(
            *(
                alice.call("POST", "/v1/jobs", json={"command": ["x"]}, headers=headers)
                for _ in "ab"
            )
        )
        assert first.body["id"] == second.body["id"]
        assert len((await alice.call("GET", "/v1/jobs")).body["jobs"]) == 1


async def test_stale_lease_is_refused_after_the_job_moved_on(tmp_path: Path) -> None:
    async with mq_service(tmp_path, lease_s=0.3, sweep_interval_s=0.05) as svc:
        alice = await svc.user()
        slow, fast = await agent_api(svc, "slow"), await agent_api(svc, "fast")
        job_id = (await alice.call("POST", "/v1/jobs", json={"command": ["x"]})).body["id"]
        lost = await slow.call("POST", "/v1/match", json={**SLOT, "agent_id": "slow"})
        retaken = None
        for _ in range(100):
            await asyncio.sleep(0.05)
            retaken = await fast.call("POST", "/v1/match", json={**SLOT, "agent_id": "fast"})
            if retaken.status == 200:
                break
        assert retaken is not None
        assert retaken.body["job"]["id"] == job_id
        late = await slow.call(
            "POST",
            f"/v1/jobs/{job_id}/finish",
            json={"lease_token": lost.body["lease_token"], "exit_code": 0},
        )
        assert (late.status, late.body["error"]) == (409, "stale_lease")
        beat = await slow.call(
            "POST", f"/v1/jobs/{job_id}/heartbeat", json={"lease_token": lost.body["lease_token"]}
        )
        assert beat.status == 409
        ok = await fast.call(
            "POST",
            f"/v1/jobs/{job_id}/finish",
            json={"lease_token": retaken.body["lease_token"], "exit_code": 0},
        )
        assert ok.body["state"] == "DONE"
        assert ok.body["attempts"] == 2


async def drain(agent: Api, name: str, ran: list[int]) -> None:
    """One agent: claim, heartbeat, finish until nothing is left."""
    slot = {**SLOT, "agent_id": name}
    while True:
        claim = await agent.call("POST", "/v1/match", json=slot)
        if claim.status == 204:
            return
        assert claim.status == 200, claim.body
        job_id, token = claim.body["job"]["id"], claim.body["lease_token"]
        beat = await agent.call("POST", f"/v1/jobs/{job_id}/heartbeat", json={"lease_token": token})
        assert beat.status == 200, beat.body
        done = await agent.call(
            "POST", f"/v1/jobs/{job_id}/finish", json={"lease_token": token, "exit_code": 0}
        )
        assert done.status == 200, done.body
        ran.append(job_id)


async def submit_many(api: Api, n: int, parallel: int = 16) -> list[int]:
    """Submit ``n`` jobs over HTTP, ``parallel`` at a time."""
    ids: list[int] = []

    async def submitter(indexes: range) -> None:
        for i in indexes:
            answer = await api.call("POST", "/v1/jobs", json={"command": ["job", str(i)]})
            assert answer.status == 201
            ids.append(answer.body["id"])

    await asyncio.gather(*(submitter(range(k, n, parallel)) for k in range(parallel)))
    return ids


async def check_each_done_once(svc: Service, ids: list[int], ran: list[int]) -> None:
    """Every job DONE, run by one agent, one ASSIGNED and one DONE event (read from the DB)."""
    assert sorted(ran) == sorted(ids)
    async with svc.store.engine.connect() as conn:
        states = Counter((await conn.execute(sa.select(jobs.c.state))).scalars())
        assert states == Counter({"DONE": len(ids)})
        rows = await conn.execute(sa.select(job_events.c.job_id, job_events.c.state))
        events = Counter((job_id, state) for job_id, state in rows.all())
    for job_id in ids:
        assert events[(job_id, "ASSIGNED")] == 1
        assert events[(job_id, "DONE")] == 1


async def test_32_agents_drain_2000_jobs_exactly_once_on_sqlite(tmp_path: Path) -> None:
    async with mq_service(tmp_path, token_cache_ttl_s=10) as svc:
        alice = await svc.user()
        ids = await submit_many(alice, 2000)
        agent = await agent_api(svc)
        ran: list[int] = []
        await asyncio.gather(*(drain(agent, f"agent-{i}", ran) for i in range(32)))
        await check_each_done_once(svc, ids, ran)


async def test_agents_drain_jobs_exactly_once_on_mariadb(tmp_path: Path, mariadb: Any) -> None:
    name = mariadb.create_database("podgrid_mq_api")
    try:
        async with mq_service(tmp_path, db_url=mariadb.url(name), token_cache_ttl_s=10) as svc:
            alice = await svc.user()
            ids = await submit_many(alice, 1000)
            agent = await agent_api(svc)
            ran: list[int] = []
            await asyncio.gather(*(drain(agent, f"agent-{i}", ran) for i in range(32)))
            await check_each_done_once(svc, ids, ran)
    finally:
        mariadb.sql(f"DROP DATABASE IF EXISTS `{name}`")
