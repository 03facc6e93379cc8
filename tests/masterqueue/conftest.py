"""Fixtures for the master-queue storage tests: a fresh Store on SQLite and on MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from podgrid.masterqueue.store import Store
from tests.harness.mariadb import MariaDB

BACKENDS = ["sqlite", "mariadb"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database: a SQLite file, or a new database on the test MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'masterqueue.db'}"
        return
    server: MariaDB = request.getfixturevalue("mariadb")
    name = server.create_database("podgrid_mq")
    yield server.url(name)
    server.sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated Store on a fresh database (each backend in turn)."""
    s = await Store.connect(db_url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
