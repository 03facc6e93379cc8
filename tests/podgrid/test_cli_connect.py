"""``podgrid info -c`` prints code that really connects to a TLS Dask scheduler."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from podgrid.cli import main
from tests.masterqueue.factories import request_text
from tests.podgrid.mq_service import RunningGrid, grid, signing_broker

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
    tmp_path: Path,
) -> None:
    """The broker's real TLS scheduler (with its peer guard) admits the snippet's owner key."""
    token = await grid.token("user", "alice")
    alice = await grid.client(token)
    record = await alice.submit_request(request_text(min_workers=1, max_workers=1))
    async with signing_broker(grid, record.id, scheduler=True) as signer:
        broker = await grid.broker(record.id)
        address = signer.broker.scheduler.address
        await broker.report_state(
            record.id, "READY", address=address, connection=signer.connection()
        )
        monkeypatch.setenv("PODGRID_URL", grid.url)
        monkeypatch.setenv("PODGRID_TOKEN", token)
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
        capsys.readouterr()  # the in-process broker's log lines so far
        code = await asyncio.to_thread(main, ["info", str(record.id), "-c"])
        snippet = capsys.readouterr().out
        assert code == 0
        assert "PRIVATE KEY" not in snippet  # the key is named by its file, never printed
        key_file = tmp_path / "xdg" / "podgrid" / "keys" / f"request-{record.id}.key"
        assert repr(str(key_file)) in snippet
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert await asyncio.to_thread(_connect_with, snippet) == address
        # A second snippet reuses the key file: the first one's certificate still matches it.
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["info", str(record.id), "-c"])
        again = capsys.readouterr().out
        assert code == 0
        assert await asyncio.to_thread(_connect_with, snippet) == address
        assert await asyncio.to_thread(_connect_with, again) == address
