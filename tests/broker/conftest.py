"""Fixtures of the broker tests: a real registry and a real master queue (SQLite, no launcher)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from podgrid.config import set_testing
from podgrid.masterqueue.service import run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.broker.grid import Grid, broker_connector


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    """Registry + master queue on free ports, a user and an agent token."""
    set_testing(True)
    registry_settings = RegistrySettings(http_port=0, udp_port=0, state_dir=tmp_path / "reg")
    async with run_registry(registry_settings) as registry:
        mq_settings = MasterQueueSettings(
            http_port=0,
            state_dir=tmp_path / "mq",
            launcher="none",
            registry_url=registry.http_url,
        )
        async with (
            run_masterqueue(mq_settings) as mq,
            aiohttp.ClientSession(connector=broker_connector(mq)) as session,
        ):
            user = await mq.store.create_token("user", "alice")
            agent = await mq.store.create_token("agent", "agent-1")
            g = Grid(registry, mq, tmp_path, user, agent, session)
            try:
                yield g
            finally:
                g.stop_workers()
    set_testing(False)
