"""Stop conditions: max reached, max_wait passed, cancel, idle timeout, TTL.

Each test checks what agents see in the registry and what the owner sees in the master queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import RequestState
from tests.broker.grid import Grid, inprocess_worker, slot, until


def request_text(min_workers: int = 1, max_workers: int = 2, **server: str) -> str:
    """A request with small workers; ``server`` adds or overrides [server] keys (as TOML)."""
    lines = [
        "[server]",
        'name = "stop-test"',
        f"min_workers = {min_workers}",
        f"max_workers = {max_workers}",
    ]
    defaults = {"max_wait": '"10m"', "ttl": '"1h"'}
    defaults.update(server)
    lines += [f"{k} = {v}" for k, v in defaults.items()]
    lines += ["[worker]", "cores = 1", 'memory = "256MiB"']
    return "\n".join(lines) + "\n"


async def _mq(grid: Grid, rid: int) -> tuple[str, int]:
    r = await grid.request(rid)
    return r.state.value, r.worker_count


async def test_max_reached_stops_publishing_and_refuses_more(grid: Grid, tmp_path: Path) -> None:
    async with grid.broker(request_text(1, 1)) as running:
        rid = running.broker.record.id
        status, grant = await grid.attach(running.url, slot("a1"))
        assert status == 200
        async with await inprocess_worker(grant, tmp_path):
            await grid.wait_registry(rid, "State", "FULL")
            assert await grid.registry_value(rid, "NeededWorkers") == 0
            assert await grid.registry_value(rid, "Workers") == 1
            await until(lambda: _mq(grid, rid), ("FULL", 1), 10)
            status, body = await grid.attach(running.url, slot("a2"))
            assert (status, body["reason"]) == (409, "full")
            # Publishing really stopped: no new publication while FULL.
            sent = running.broker.publication.sent_total
            await asyncio.sleep(0.6)
            assert running.broker.publication.sent_total == sent


async def test_workers_lost_inside_the_wait_window_publish_again(
    grid: Grid, tmp_path: Path
) -> None:
    async with grid.broker(request_text(1, 1)) as running:
        rid = running.broker.record.id
        status, grant = await grid.attach(running.url, slot("a1"))
        assert status == 200
        async with await inprocess_worker(grant, tmp_path):
            await grid.wait_registry(rid, "State", "FULL")
        await grid.wait_registry(rid, "NeededWorkers", 1)
        assert await grid.registry_value(rid, "State") == "READY"
        assert (await grid.attach(running.url, slot("a2")))[0] == 200


async def test_max_wait_without_min_workers_expires(grid: Grid) -> None:
    async with grid.broker(request_text(1, 2, max_wait='"2s"')) as running:
        rid = running.broker.record.id
        await asyncio.wait_for(running.broker.finished.wait(), 10)
    assert running.broker.final is not None
    assert running.broker.final[0] == RequestState.EXPIRED
    assert await grid.registry_value(rid, "NeededWorkers") == 0
    assert await grid.registry_value(rid, "State") == "EXPIRED"
    assert (await grid.request(rid)).state == RequestState.EXPIRED


async def test_max_wait_with_min_workers_keeps_the_cluster(grid: Grid, tmp_path: Path) -> None:
    async with grid.broker(request_text(1, 3, max_wait='"3s"')) as running:
        rid = running.broker.record.id
        status, grant = await grid.attach(running.url, slot("a1"))
        async with await inprocess_worker(grant, tmp_path):
            await grid.wait_registry(rid, "NeededWorkers", 2)
            await grid.wait_registry(rid, "NeededWorkers", 0, timeout_s=10)
            assert await grid.registry_value(rid, "State") == "READY"
            status, body = await grid.attach(running.url, slot("a2"))
            assert (status, body["reason"]) == (409, "closed")
            assert not running.broker.finished.is_set()
            await until(lambda: _mq(grid, rid), ("READY", 1), 10)


async def test_cancel_stops_the_broker(grid: Grid) -> None:
    async with grid.broker(request_text(2, 2)) as running:
        rid = running.broker.record.id
        await grid.wait_registry(rid, "NeededWorkers", 2)
        async with MasterQueueClient(grid.mq.url, grid.user_token) as mq:
            await mq.cancel_request(rid)
        await asyncio.wait_for(running.broker.finished.wait(), 10)
    assert running.broker.final is not None
    assert running.broker.final[0] == RequestState.CANCELLED
    assert await grid.registry_value(rid, "NeededWorkers") == 0
    assert await grid.registry_value(rid, "State") == "CANCELLED"
    assert (await grid.request(rid)).state == RequestState.CANCELLED
    assert running.broker.scheduler.status.name == "closed"


async def test_idle_cluster_shuts_down(grid: Grid, tmp_path: Path) -> None:
    seen: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        workers = await stack.enter_async_context(_workers_outliving_the_broker(seen))
        running = await stack.enter_async_context(
            grid.broker(request_text(1, 1, idle_timeout='"2s"'))
        )
        rid = running.broker.record.id
        status, grant = await grid.attach(running.url, slot("a1"))
        assert status == 200
        workers.append(await inprocess_worker(grant, tmp_path))
        await grid.wait_registry(rid, "State", "FULL")
        await asyncio.wait_for(running.broker.finished.wait(), 10)
    assert seen == ["closed"]  # the broker retired its worker on the way out
    assert running.broker.final is not None
    assert running.broker.final[0] == RequestState.DONE
    assert "idle" in running.broker.final[1]
    assert await grid.registry_value(rid, "NeededWorkers") == 0
    assert await grid.registry_value(rid, "State") == "DONE"
    assert await _mq(grid, rid) == ("DONE", 0)


@contextlib.asynccontextmanager
async def _workers_outliving_the_broker(seen: list[str]) -> AsyncIterator[list[Any]]:
    workers: list[Any] = []
    try:
        yield workers
    finally:
        for worker in workers:
            seen.append(str(worker.status.name))
            await worker.close()


async def test_ttl_over_expires(grid: Grid) -> None:
    async with grid.broker(request_text(1, 1, max_wait='"1s"', ttl='"2s"')) as running:
        rid = running.broker.record.id
        await asyncio.wait_for(running.broker.finished.wait(), 10)
    assert running.broker.final is not None
    assert running.broker.final[0] == RequestState.EXPIRED
    assert await grid.registry_value(rid, "State") == "EXPIRED"
    assert (await grid.request(rid)).state == RequestState.EXPIRED
