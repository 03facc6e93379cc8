"""After a whole cluster's life no private key is in the master queue's database, or any reply.

A real broker, real in-process Dask workers attached through the attach API, the owner
connecting through ``PodGrid.connection`` and computing: then the raw SQLite files (database,
WAL, journal) and every row of every table are searched for a PEM private key.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from distributed import Client

from podgrid.masterqueue.client import MasterQueueClient
from tests.broker.grid import DEFAULT_REQUEST, Grid, inprocess_worker, slot, until

PEM_KEY = b"PRIVATE KEY"


def _database_files(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob("masterqueue.db*"))


def _rows_with_a_key(db: Path) -> list[tuple[str, str]]:
    found = []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                if "PRIVATE KEY" in repr(row):
                    found.append((table, repr(row)[:80]))
    return found


async def test_the_database_holds_no_private_key_after_a_full_flow(
    grid: Grid, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with grid.broker(DEFAULT_REQUEST) as running, contextlib.AsyncExitStack() as stack:
        rid = running.broker.record.id
        for i in range(2):
            status, grant = await grid.attach(running.url, slot(f"agent-{i}"))
            assert status == 200
            await stack.enter_async_context(await inprocess_worker(grant, tmp_path / f"w{i}"))
        await grid.wait_registry(rid, "State", "FULL", timeout_s=30)

        async def state() -> str:
            return (await grid.request(rid)).state.value

        await until(state, "FULL", 10)
        info = await grid.owner_connection(rid)
        async with Client(info.address, security=info.security(), asynchronous=True) as client:
            assert await client.submit(sum, [1, 2, 3]) == 6
        assert "PRIVATE KEY" not in info.model_dump_json()  # the key is never serialized
        async with MasterQueueClient(grid.mq.url, grid.user_token) as mq:
            shown = await mq.connection(rid)
            assert "PRIVATE KEY" not in shown.model_dump_json()
            assert shown.connection is not None
            assert shown.connection.tls_client_cert is None
    state_dir = grid.tmp / "mq"
    files = _database_files(state_dir)
    assert files, f"no database under {state_dir}"
    for path in files:
        assert PEM_KEY not in path.read_bytes(), path.name
    assert _rows_with_a_key(state_dir / "masterqueue.db") == []
    out, err = capfd.readouterr()
    assert "PRIVATE KEY" not in out + err  # nor in any log line of the broker or services
