"""``adaptive = true``: NeededWorkers follows Dask's adaptive target; idle surplus is retired."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from distributed import Client

from tests.broker.grid import Grid, inprocess_worker, slot, until

ADAPTIVE_REQUEST = """
[server]
name = "elastic"
min_workers = 1
max_workers = 3
adaptive = true
[worker]
cores = 1
memory = "256MiB"
"""


async def test_needed_workers_follow_the_adaptive_target(grid: Grid, tmp_path: Path) -> None:
    async with grid.broker(ADAPTIVE_REQUEST) as running, contextlib.AsyncExitStack() as stack:
        broker = running.broker
        rid = broker.record.id
        await grid.wait_registry(rid, "NeededWorkers", 1)  # no work: the minimum
        _, grant = await grid.attach(running.url, slot("a0"))
        await stack.enter_async_context(await inprocess_worker(grant, tmp_path / "w0"))
        await grid.wait_registry(rid, "NeededWorkers", 0)
        status, body = await grid.attach(running.url, slot("a1"))
        assert (status, body["reason"]) == (409, "full")  # the target, not max, bounds it

        info = await grid.owner_connection(rid)
        client = await stack.enter_async_context(
            Client(info.address, security=info.security(), asynchronous=True)
        )
        futures = client.map(time.sleep, [0.3] * 40, pure=False)
        await grid.wait_registry(rid, "NeededWorkers", 2)  # grown to max_workers
        for i in (1, 2):
            status, grant = await grid.attach(running.url, slot(f"a{i}"))
            assert status == 200
            await stack.enter_async_context(await inprocess_worker(grant, tmp_path / f"w{i}"))
        await grid.wait_registry(rid, "Workers", 3)
        await client.gather(futures)
        del futures

        async def workers() -> int:
            await asyncio.sleep(0)
            return broker.places.connected

        await until(workers, 1, 20)  # idle surplus retired, back to the minimum
        assert await grid.registry_value(rid, "NeededWorkers") == 0
