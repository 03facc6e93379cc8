"""``podgrid info -c`` prints code that really connects to a TLS Dask scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from distributed import Scheduler
from distributed.security import Security

from podgrid.cli import main
from podgrid.protocol import ConnectionInfo
from tests.masterqueue.factories import request_text
from tests.podgrid.mq_service import RunningGrid, grid

__all__ = ["grid"]  # the fixture, imported so pytest finds it here


@pytest.fixture
def reset_logging() -> Iterator[None]:
    """``main`` binds logging to the captured stderr: undo that afterwards."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def _connect_with(snippet: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    client = namespace["client"]
    try:
        return client.scheduler_info()["address"]
    finally:
        client.close()


async def test_connection_snippet_reaches_the_tls_scheduler(
    grid: RunningGrid,
    reset_logging: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = Security.temporary()  # one CA-signed pair for every role, as a broker makes per cluster
    token = await grid.token("user", "alice")
    alice = await grid.client(token)
    record = await alice.submit_request(request_text(min_workers=1, max_workers=1))
    async with Scheduler(
        protocol="tls", host="127.0.0.1", port=0, security=tls, dashboard_address=":0"
    ) as scheduler:
        broker = await grid.broker(record.id)
        connection = ConnectionInfo(
            address=scheduler.address,
            tls_ca=tls.tls_ca_file,
            tls_client_cert=tls.tls_client_cert,
            tls_client_key=tls.tls_client_key,
        )
        await broker.report_state(
            record.id, "READY", address=scheduler.address, connection=connection
        )
        monkeypatch.setenv("PODGRID_URL", grid.url)
        monkeypatch.setenv("PODGRID_TOKEN", token)
        code = await asyncio.to_thread(main, ["info", str(record.id), "-c"])
        snippet = capsys.readouterr().out
        assert code == 0
        assert await asyncio.to_thread(_connect_with, snippet) == scheduler.address
