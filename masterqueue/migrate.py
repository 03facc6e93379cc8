"""Schema creation and upgrades: the Alembic migrations shipped in ``masterqueue/migrations``.

:func:`migrate` is idempotent and runs on every ``masterqueue serve``. On MariaDB a named lock
(``GET_LOCK``) keeps two processes from migrating at once (MariaDB DDL is not transactional);
on SQLite the migration runs in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
HEAD = "0002"
MIGRATE_LOCK = "podgrid_masterqueue_migrate"
MIGRATE_LOCK_TIMEOUT_S = 120  # seconds


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config pointing at the shipped migrations (and at ``connection``, if given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: sa.Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(engine: AsyncEngine) -> None:
    """Create or upgrade the schema to the newest revision; a no-op when already there."""
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            conn = await conn.execution_options(podgrid_write=True)
            async with conn.begin():
                await conn.run_sync(_upgrade)
        return
    async with engine.connect() as conn:
        got = (
            await conn.execute(
                sa.text("SELECT GET_LOCK(:name, :timeout)"),
                {"name": MIGRATE_LOCK, "timeout": MIGRATE_LOCK_TIMEOUT_S},
            )
        ).scalar_one()
        if got != 1:
            raise RuntimeError(f"could not take the migration lock {MIGRATE_LOCK!r}")
        try:
            await conn.commit()
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            await conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATE_LOCK})
            await conn.commit()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (None when never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
