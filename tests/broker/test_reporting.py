"""State reports: a master-queue outage does not stop the cluster; it catches up afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from podgrid.broker.service import run_broker
from podgrid.config import set_testing
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.masterqueue.service import run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.broker.grid import Grid, broker_connector, inprocess_worker, slot, until

REQUEST = """
[server]
name = "outage"
min_workers = 1
max_workers = 2
[worker]
cores = 1
memory = "256MiB"
"""


async def test_cluster_survives_a_master_queue_outage(tmp_path: Path) -> None:
    set_testing(True)
    reg_settings = RegistrySettings(http_port=0, udp_port=0, state_dir=tmp_path / "reg")
    async with (
        run_registry(reg_settings) as registry,
        contextlib.AsyncExitStack() as stack,
    ):
        mq_settings = MasterQueueSettings(
            http_port=0, state_dir=tmp_path / "mq", launcher="none", registry_url=registry.http_url
        )
        first_mq = run_masterqueue(mq_settings)
        mq = await first_mq.__aenter__()
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=broker_connector(mq))
        )
        user = await mq.store.create_token("user", "alice")
        agent = await mq.store.create_token("agent", "agent-1")
        async with MasterQueueClient(mq.url, user) as client:
            rid = (await client.submit_request(REQUEST, "toml")).id
        broker_token = await mq.store.create_token("broker", "b", rid)
        grid = Grid(registry, mq, tmp_path, user, agent, session)
        running = await stack.enter_async_context(run_broker(grid.settings(rid, broker_token)))
        grid.request_of[running.url] = rid

        async def mq_view() -> tuple[str, int]:
            r = await grid.request(rid)
            return r.state.value, r.worker_count

        status, first = await grid.attach(running.url, slot("a1"))
        assert status == 200
        stack.push_async_callback((await inprocess_worker(first, tmp_path / "w1")).close)
        await until(mq_view, ("READY", 1), 10)

        await first_mq.__aexit__(None, None, None)  # the master queue goes down
        # Tickets are checked by the broker alone: attaching still works; the cluster fills up.
        status, second = await grid.attach(running.url, slot("a2"))
        assert status == 200
        stack.push_async_callback((await inprocess_worker(second, tmp_path / "w2")).close)
        await grid.wait_registry(rid, "State", "FULL")
        await asyncio.sleep(1.0)  # several heartbeats fail meanwhile
        assert running.broker.reporter.failed_total > 0
        assert not running.broker.finished.is_set()

        port = int(mq.url.rsplit(":", 1)[1])
        back = mq_settings.model_copy(update={"http_port": port})
        grid.mq = await stack.enter_async_context(run_masterqueue(back))
        await until(mq_view, ("FULL", 2), 15)  # it catches up once the master queue is back
        assert not running.broker.finished.is_set()
    set_testing(False)
