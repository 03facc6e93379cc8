"""Alembic environment: runs on the connection that ``podgrid.masterqueue.migrate`` passes in.

``migrate`` opens a connection on the service's async engine and calls Alembic through
``run_sync`` (the sync bridge), handing the connection over in ``config.attributes``.
"""

from __future__ import annotations

from alembic import context

from podgrid.masterqueue.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the master-queue migrations through masterqueue.migrate.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
