"""The master queue's long-poll: ``GET /v1/requests/{id}?wait=S&since=V`` and ``wait_ready``.

Against the real service: the answer is held while nothing changes, and comes with the change
(woken by it, not by a recheck); ``PodGrid.wait_ready`` sees READY in one long-poll.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from podgrid.client import PodGrid
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.watch import RECHECK_S
from podgrid.protocol import RequestState, WorkerInfo
from tests.masterqueue.api_helpers import mq_service

REQUEST = """
[server]
name = "longpoll"
min_workers = 1
max_workers = 2
"""


def _worker(name: str) -> WorkerInfo:
    return WorkerInfo(
        name=name, agent_id=f"a-{name}", site="S", host="h", attached_at=datetime.now(UTC)
    )


async def test_a_long_poll_waits_for_the_change_and_comes_with_it(
    tmp_path: Path, db_url: str
) -> None:
    async with mq_service(tmp_path, db_url=db_url, launcher="none") as svc:
        store = svc.store
        alice = await svc.admin.issue("user", "alice")
        async with MasterQueueClient(svc.running.url, alice) as client:
            rid = (await client.submit_request(REQUEST, "toml")).id
            first = await client.get_request(rid)
            assert first.version
            # Nothing changes: the answer is held for the whole wait, and says so.
            asked = time.monotonic()
            same = await client.get_request(rid, wait_s=0.3, since=first.version)
            assert time.monotonic() - asked >= 0.3
            assert same.version == first.version
            # A change while it waits: the answer comes with it, woken by the change.
            woken = store.watch.woken

            async def change() -> float:
                await asyncio.sleep(0.2)
                await store.transition(rid, RequestState.STARTING, "test")
                return time.monotonic()

            changer = asyncio.create_task(change())
            moved = await client.get_request(rid, wait_s=RECHECK_S * 5, since=first.version)
            answered, changed = time.monotonic(), await changer
            assert moved.state == RequestState.STARTING
            assert moved.version != first.version
            assert store.watch.woken == woken + 1, "the change woke the long-poll"
            assert answered - changed < RECHECK_S, "not a recheck's answer"
            # A stale version is answered at once.
            asked = time.monotonic()
            assert (await client.get_request(rid, wait_s=10, since=first.version)).state == (
                RequestState.STARTING
            )
            assert time.monotonic() - asked < RECHECK_S


async def test_wait_ready_sees_ready_in_one_long_poll(tmp_path: Path, db_url: str) -> None:
    async with mq_service(tmp_path, db_url=db_url, launcher="none") as svc:
        store = svc.store
        alice = await svc.admin.issue("user", "alice")
        async with MasterQueueClient(svc.running.url, alice) as client:
            rid = (await client.submit_request(REQUEST, "toml")).id
            await store.transition(rid, RequestState.STARTING, "test")
            await store.broker_report(rid, RequestState.PUBLISHING, [])
            seen: list[str] = []
            pod = PodGrid(client)
            # No polling: if wait_ready polled, a 10 s interval would make this test time out.
            waiter = asyncio.create_task(
                pod.wait_ready(
                    rid, progress=lambda d: seen.append(d.state.value), poll_interval_s=10
                )
            )
            await asyncio.sleep(0.3)
            woken = store.watch.woken
            await store.broker_report(rid, RequestState.READY, [_worker("w1")])
            detail = await asyncio.wait_for(waiter, RECHECK_S)
        assert detail.state == RequestState.READY
        assert store.watch.woken == woken + 1
        assert seen == ["PUBLISHING", "READY"], "one answer before, one with the change"


async def test_bad_wait_and_since_are_400(tmp_path: Path) -> None:
    async with mq_service(tmp_path, launcher="none") as svc:
        alice = svc.admin.as_(await svc.admin.issue("user", "alice"))
        rid = (await alice.call("POST", "/v1/requests", data=REQUEST)).body["id"]
        for query in ("wait=-1", "wait=61", "wait=nan", "wait=abc", "since=" + "x" * 65):
            answer = await alice.call("GET", f"/v1/requests/{rid}?{query}")
            assert answer.status == 400, query
            assert answer.body["fields"][0]["loc"][0] == "query"
