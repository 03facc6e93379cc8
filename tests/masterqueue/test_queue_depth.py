"""The master queue publishes its batch queue depth to a real registry (for the dashboard)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from podgrid.monitoring.client import RegistryClient, Sample
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.masterqueue import factories
from tests.masterqueue.api_helpers import mq_service

DEPTH = "/rest/*/PoD_MasterQueue/batch/WaitingJobs|RunningJobs|ActiveRequests"


async def _depth_until(client: RegistryClient, expected: dict[str, int]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for _ in range(50):
        samples: list[Sample] = await client.query(DEPTH, wait_s=0.5)
        seen = {s.parameter: s.value for s in samples}
        if seen == expected:
            break
        await asyncio.sleep(0.05)
    return seen


async def test_queue_depth_reaches_the_registry(tmp_path: Path) -> None:
    settings = RegistrySettings(http_port=0, udp_port=0, state_dir=tmp_path / "reg")
    async with run_registry(settings) as registry:
        udp = f"udp://{registry.udp_addr[0]}:{registry.udp_addr[1]}"
        async with (
            mq_service(tmp_path, registry_publish=udp, queue_publish_interval_s=0.1) as mq,
            RegistryClient(registry.http_url) as client,
        ):
            for _ in range(3):
                await mq.store.submit_job("alice", factories.job())
            await mq.store.submit_request("alice", *factories.request())
            assert await _depth_until(
                client, {"WaitingJobs": 3, "RunningJobs": 0, "ActiveRequests": 1}
            ) == {"WaitingJobs": 3, "RunningJobs": 0, "ActiveRequests": 1}

            slot = factories.slot()
            assert await mq.store.claim_job(slot, lease_s=60) is not None
            assert await _depth_until(
                client, {"WaitingJobs": 2, "RunningJobs": 1, "ActiveRequests": 1}
            ) == {"WaitingJobs": 2, "RunningJobs": 1, "ActiveRequests": 1}
