"""Alembic migrations: idempotent, at head, and producing exactly the tables the code uses."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from podgrid.masterqueue.migrate import HEAD, current_revision
from podgrid.masterqueue.schema import metadata
from podgrid.masterqueue.store import Store
from tests.masterqueue import factories as f


def _diff(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": False})
    return [d for d in compare_metadata(context, metadata) if "ix_jobs_match" not in repr(d)]


async def test_migrate_twice_is_a_no_op_and_matches_the_schema(db_url: str) -> None:
    store = await Store.connect(db_url)
    try:
        assert await current_revision(store.engine) is None
        await store.migrate()
        req, text = f.request()
        req_id = (await store.submit_request("alice", req, text)).id
        await store.migrate()  # the second serve on the same database
        assert await current_revision(store.engine) == HEAD
        assert (await store.get_request(req_id)).name == req.name  # data survives
        async with store.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
            diff = await conn.run_sync(_diff)
            indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("jobs"))
    finally:
        await store.close()
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert diff == []
    match = next(i for i in indexes if i["name"] == "ix_jobs_match")
    assert match["column_names"][0] == "state"
    assert "created_ms" in match["column_names"]
