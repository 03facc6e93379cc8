"""Warm brokers: the local launcher keeps one started; it serves one request only, and is replaced.

Real master queue, real ``podgrid broker serve --warm`` processes, real requests.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psutil

from podgrid.masterqueue import keys as mq_keys
from podgrid.masterqueue.launcher import LocalLauncher
from podgrid.protocol import RequestState
from tests.jobagent.grid import eventually, running_grid

BROKER = [sys.executable, "-m", "podgrid", "broker", "serve", "--publish-interval", "0.5"]
REQUEST = """
[server]
name = "warm"
min_workers = 1
max_workers = 1
"""


def _pool(launcher: LocalLauncher) -> list[int]:
    return [proc.pid for proc, _ in launcher._pool if proc.poll() is None]


async def test_a_warm_broker_serves_one_request_and_is_replaced(tmp_path: Path) -> None:
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER, warm_brokers=1) as g:
        launcher = g.mq_app[mq_keys.LAUNCH_LOOP].launcher
        assert isinstance(launcher, LocalLauncher)
        await eventually(lambda: len(_pool(launcher)) == 1, 30, "a warm broker ready")
        (first,) = _pool(launcher)
        served: list[int] = []
        for n in range(2):
            record = await g.user.submit_request(REQUEST, "toml")

            async def publishing(rid: int = record.id) -> bool:
                state = (await g.user.get_request(rid)).state
                return state == RequestState.PUBLISHING

            await eventually(publishing, 30, f"request {record.id} published")
            handle = g.mq_app[mq_keys.LAUNCH_LOOP].handles[record.id]
            served.append(handle.pid)
            assert launcher.warm_used == n + 1, "served by a warm broker, not a cold start"
            await eventually(lambda: len(_pool(launcher)) == 1, 30, "the pool refilled")
            assert handle.pid not in _pool(launcher), "a serving broker is never in the pool"
            log = handle.log_path.read_text() if handle.log_path else ""
            assert '"broker.assigned"' in log
            assert f'"request_id": {record.id}' in log
            await g.user.cancel_request(record.id)
            await eventually(lambda h=handle: h.process.poll() is not None, 30, "broker exited")
        assert served[0] == first
        assert served[1] != served[0], "the second request got a new broker"
        assert launcher.cold_used == 0
        remaining = _pool(launcher)
    # The master queue stopped: the unused warm broker left with it.
    await asyncio.sleep(0.1)
    assert not [pid for pid in remaining if psutil.pid_exists(pid)]
