"""Hot-path statements executed on the DB-API driver connection, inside SQLAlchemy's transaction.

A claim costs three statements; going through SQLAlchemy's execution machinery for each one
doubled the CPU a claim needs, which capped matching throughput on a small master. A
:class:`DriverStatement` is still a SQLAlchemy Core statement, compiled once per dialect
(so SQL stays portable and typed in one place), but executed with the driver's own async
cursor on the connection SQLAlchemy has checked out and begun: same session, same
transaction, same commit/rollback and retry handling in :class:`podgrid.masterqueue.db.Database`.
Only plain values cross this path (ints, strings; JSON comes back as text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler


class DriverStatement:
    """A Core statement compiled once per dialect, run on the driver connection."""

    def __init__(
        self, statement: sa.ClauseElement, column_keys: Sequence[str] | None = None
    ) -> None:
        self._statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def _compile(self, dialect: sa.Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = cast(
                SQLCompiler,
                self._statement.compile(dialect=dialect, column_keys=self._column_keys),
            )
            if dialect.paramstyle not in ("format", "qmark"):
                raise RuntimeError(f"unsupported paramstyle {dialect.paramstyle!r}")
            order = tuple(compiled.positiontup or ())
            found = (compiled.string, order, dict(compiled.construct_params(_check=False) or {}))
            self._compiled[dialect.name] = found
        return found

    async def _run(
        self, conn: AsyncConnection, params: Mapping[str, Any], fetch: bool
    ) -> tuple[tuple[Any, ...] | None, int]:
        sql, order, defaults = self._compile(conn.dialect)
        merged = {**defaults, **params}
        args = tuple(merged[key] for key in order)
        raw = await conn.get_raw_connection()
        cursor: Any = await raw.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            await cursor.execute(sql, args)
            row = await cursor.fetchone() if fetch else None
            return (tuple(row) if row is not None else None), int(cursor.rowcount)
        finally:
            await cursor.close()

    async def first(
        self, conn: AsyncConnection, params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of a SELECT, as a plain tuple in the statement's column order."""
        row, _ = await self._run(conn, params, fetch=True)
        return row

    async def rowcount(self, conn: AsyncConnection, params: Mapping[str, Any]) -> int:
        """Run an INSERT/UPDATE/DELETE; the number of rows it matched."""
        _, count = await self._run(conn, params, fetch=False)
        return count
