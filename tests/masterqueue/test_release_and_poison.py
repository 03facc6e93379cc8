"""Release of a job by its agent, and poison jobs refused at submit: real service, real DBs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podgrid.masterqueue.jobs import FREE_RELEASES
from podgrid.protocol import JobSpec
from tests.masterqueue.api_helpers import Api, Service, mq_service
from tests.masterqueue.test_api_jobs import SLOT, agent_api

REASON = "agent shut down: job returned to the queue"


async def _claimed(svc: Service, alice: Api, agent: Api, **spec: Any) -> tuple[int, str]:
    job = await alice.call("POST", "/v1/jobs", json={"command": ["true"], **spec})
    assert job.status == 201
    claim = await agent.call("POST", "/v1/match", json=SLOT)
    assert claim.status == 200
    return int(claim.body["job"]["id"]), str(claim.body["lease_token"])


async def test_release_returns_the_job_without_using_an_attempt(
    tmp_path: Path, db_url: str
) -> None:
    async with mq_service(tmp_path, db_url=db_url) as svc:
        alice, agent = await svc.user("alice"), await agent_api(svc)
        job_id, token = await _claimed(svc, alice, agent, max_attempts=1)
        released = await agent.call(
            "POST", f"/v1/jobs/{job_id}/release", json={"lease_token": token, "reason": REASON}
        )
        assert released.status == 200
        assert released.body["state"] == "WAITING"
        assert released.body["attempts"] == 0, "a release is not the job's failure"
        assert released.body["agent_id"] is None
        # The old lease is dead: heartbeat, finish and a second release are all refused.
        for path, body in (
            ("heartbeat", {"lease_token": token}),
            ("finish", {"lease_token": token, "exit_code": 0}),
            ("release", {"lease_token": token, "reason": REASON}),
        ):
            stale = await agent.call("POST", f"/v1/jobs/{job_id}/{path}", json=body)
            assert stale.status == 409, path
            assert stale.body["error"] == "stale_lease"
        # max_attempts=1 and yet it runs again, to DONE.
        again = await agent.call("POST", "/v1/match", json=SLOT)
        assert again.body["job"]["id"] == job_id
        done = await agent.call(
            "POST",
            f"/v1/jobs/{job_id}/finish",
            json={"lease_token": again.body["lease_token"], "exit_code": 0},
        )
        assert done.body["state"] == "DONE"
        assert done.body["attempts"] == 1
        history = (await alice.call("GET", f"/v1/jobs/{job_id}")).body["history"]
        assert [h["state"] for h in history] == [
            "WAITING",
            "ASSIGNED",
            "WAITING",
            "ASSIGNED",
            "DONE",
        ]
        assert REASON in history[2]["reason"]
        assert "not counted" in history[2]["reason"]


async def test_release_needs_an_agent_and_a_reason(tmp_path: Path, db_url: str) -> None:
    async with mq_service(tmp_path, db_url=db_url) as svc:
        alice, agent = await svc.user("alice"), await agent_api(svc)
        job_id, token = await _claimed(svc, alice, agent)
        body = {"lease_token": token, "reason": REASON}
        assert (await alice.call("POST", f"/v1/jobs/{job_id}/release", json=body)).status == 403
        empty = await agent.call(
            "POST", f"/v1/jobs/{job_id}/release", json={"lease_token": token, "reason": ""}
        )
        assert empty.status == 400
        assert empty.body["fields"][0]["loc"] == ["reason"]


async def test_endless_releases_end_in_expired(tmp_path: Path, db_url: str) -> None:
    """A job that keeps making its agents shut down cannot circulate for ever."""
    async with mq_service(tmp_path, db_url=db_url) as svc:
        alice, agent = await svc.user("alice"), await agent_api(svc)
        await alice.call("POST", "/v1/jobs", json={"command": ["true"], "max_attempts": 2})
        states = []
        for _ in range(FREE_RELEASES + 5):
            claim = await agent.call("POST", "/v1/match", json=SLOT)
            if claim.status == 204:
                break
            job_id = claim.body["job"]["id"]
            answer = await agent.call(
                "POST",
                f"/v1/jobs/{job_id}/release",
                json={"lease_token": claim.body["lease_token"], "reason": REASON},
            )
            states.append(answer.body["state"])
        assert states == ["WAITING"] * (FREE_RELEASES + 1) + ["EXPIRED"]


async def test_poison_jobs_are_refused_at_submit_naming_the_field(
    tmp_path: Path, db_url: str
) -> None:
    """Each of these was accepted (201) and then killed every agent that took it."""
    async with mq_service(tmp_path, db_url=db_url) as svc:
        alice = await svc.user("alice")
        cases: list[tuple[dict[str, Any], list[Any]]] = [
            ({"command": ["echo", "a\u0000b"]}, ["command", 1]),
            ({"command": ["true"], "env": {"A=B": "x"}}, ["env", "A=B", "[key]"]),
            ({"command": ["true"], "env": {"": "x"}}, ["env", "", "[key]"]),
            ({"command": ["true"], "env": {"A\u0000": "x"}}, ["env", "A\u0000", "[key]"]),
            ({"command": ["true"], "env": {"A": "x\u0000y"}}, ["env", "A"]),
            ({"command": ["x"] * 4097}, ["command"]),
            ({"command": ["x" * 70_000, "y" * 70_000]}, ["command"]),
            ({"command": ["true"], "env": {f"K{i}": "v" for i in range(1025)}}, ["env"]),
            ({"command": ["true"], "env": {f"K{i}": "v" * 200 for i in range(700)}}, ["env"]),
        ]
        for spec, loc in cases:
            answer = await alice.call("POST", "/v1/jobs", json=spec)
            assert answer.status == 400, (loc, answer.body)
            assert answer.body["fields"][0]["loc"] == loc
        nul = await alice.call("POST", "/v1/jobs", json={"command": ["echo", "a\u0000b"]})
        assert "command.1" in nul.body["message"]
        assert "NUL" in nul.body["message"]
        listed = await alice.call("GET", "/v1/jobs")
        assert listed.body["jobs"] == [], "nothing of it entered the queue"


async def test_an_old_poison_job_in_the_database_does_not_stop_matching(
    tmp_path: Path, db_url: str
) -> None:
    """A job stored before the submit checks (a NUL in argv): matched, it crashed every agent.

    Now the claim ends it ERROR_E with the reason and hands out the next job instead.
    """
    async with mq_service(tmp_path, db_url=db_url) as svc:
        alice, agent = await svc.user("alice"), await agent_api(svc)
        poison = JobSpec.model_construct(command=["echo", "a\u0000b"], env={"A=B": "x"})
        (old,) = await svc.store.submit_jobs("alice", [poison])
        good = await alice.call("POST", "/v1/jobs", json={"command": ["true"]})
        for _ in range(2):  # the second match finds the poison job already ended
            claim = await agent.call("POST", "/v1/match", json=SLOT)
            assert claim.status in (200, 204)
            if claim.status == 200:
                assert claim.body["job"]["id"] == good.body["id"]
        shown = await alice.call("GET", f"/v1/jobs/{old}")
        assert shown.status == 200
        assert shown.body["state"] == "ERROR_E"
        reason = shown.body["history"][-1]["reason"]
        assert "not valid today" in reason
        assert "command" in reason
