"""The database handle of the store: engine set-up, transactions, retries, the clock.

Every transaction runs through :meth:`Database.run`, which retries the *whole* transaction
through ``podgrid.config.retry.retry_policy(kind="db")`` on transient errors (MariaDB restarting or
dropping the connection, deadlock 1213, lock wait timeout 1205, SQLite "database is locked").
Transactions are therefore written to be safe to run again (idempotency keys, compare-and-set).

SQLite: WAL, a busy timeout, ``BEGIN IMMEDIATE`` for write transactions (one writer across
processes) and an ``asyncio.Lock`` so writers of one process queue in Python, not in SQLite.
MariaDB: ``READ COMMITTED``, so a locking read releases the rows it scanned but did not take.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from podgrid.config.retry import retry_policy
from podgrid.config.runtime import private_dir
from podgrid.masterqueue.errors import DatabaseUnavailable

T = TypeVar("T")
log = structlog.get_logger("podgrid.masterqueue")

SQLITE_BUSY_TIMEOUT_MS = 10_000  # milliseconds
DB_RETRY_DEADLINE_S = 30.0  # seconds; long enough for a MariaDB restart
# MySQL/MariaDB error codes worth a retry: lock wait 1205, deadlock 1213, server gone 2006,
# lost connection 2013, cannot connect 2003, shutdown in progress 1053, connection killed 1927,
# query interrupted 1317, too many connections 1040.
TRANSIENT_MYSQL_CODES = frozenset({1040, 1053, 1205, 1213, 1317, 1927, 2003, 2006, 2013, 2014})
TRANSIENT_SQLITE_TEXT = ("database is locked", "database table is locked")

Work = Callable[[AsyncConnection], Awaitable[T]]


def epoch_ms(at: datetime) -> int:
    """A timezone-aware datetime as integer epoch milliseconds."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: pass a timezone-aware UTC datetime")
    return int(at.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    """Epoch milliseconds (or None) as a UTC datetime (or None)."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def from_ms_required(ms: int) -> datetime:
    """Epoch milliseconds as a UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error is worth retrying the transaction for."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
            return True
        orig = exc.orig
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in TRANSIENT_MYSQL_CODES:
            return True
        text = str(orig).lower()
        return any(marker in text for marker in TRANSIENT_SQLITE_TEXT)
    return isinstance(exc, ConnectionError | TimeoutError)


class _Transient(Exception):
    """Internal marker: the attempt failed transiently; tenacity retries on it."""


def private_sqlite_file(path: Path) -> None:
    """Make the SQLite database ``path`` (and its ``-wal``/``-shm``) mode 0600 before use.

    The database holds token digests and every cluster's TLS keys. SQLite would create the
    file with the process umask (0644 under the usual 022); made here first with 0600, it is
    private from the first byte, and SQLite gives the ``-wal`` and ``-shm`` files it creates
    the main file's mode. Files left by an older run with wider modes are tightened; a
    missing directory is created 0700.
    """
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``mysql+aiomysql://`` or ``sqlite+aiosqlite://`` with sane settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        if not in_memory and parsed.database and not parsed.database.startswith("file:"):
            private_sqlite_file(Path(parsed.database))
        pool: dict[str, Any] = {} if in_memory else {"pool_size": pool_size, "max_overflow": 0}
        engine = create_async_engine(url, connect_args={"timeout": 30}, **pool)
        _setup_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping (a round trip per transaction): a dead pooled connection fails its first
        # statement, SQLAlchemy invalidates the pool, and Database.run retries the transaction.
        pool_recycle=3600,
        # Every transaction ends in COMMIT or ROLLBACK inside Database.run (or the connection is
        # invalidated), so the pool's extra ROLLBACK on check-in is a wasted round trip.
        pool_reset_on_return=None,
        isolation_level="READ COMMITTED",
    )


def _setup_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy (our "begin" hook) own transactions instead of the sqlite3 module.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("podgrid_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """An engine plus the rules for running transactions on it (retries, SQLite writer lock)."""

    def __init__(
        self, engine: AsyncEngine, *, retry_deadline_s: float = DB_RETRY_DEADLINE_S
    ) -> None:
        self.engine = engine
        self.retry_deadline_s = retry_deadline_s
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_mysql = engine.dialect.name in ("mysql", "mariadb")
        self._write_lock = asyncio.Lock()

    async def run(self, work: Work[T], *, write: bool = True, name: str = "db") -> T:
        """Run ``work(conn)`` in one transaction, retrying it whole on transient errors."""
        try:  # the first try outside tenacity: most calls need no retry, and this is hot
            return await self._once(work, write=write)
        except _Transient as e:
            log.info("masterqueue.db_retry", operation=name, error=repr(e.__cause__))
        policy = retry_policy(
            "db",
            retry_on=_Transient,
            attempts=None,
            deadline_s=self.retry_deadline_s,
        )
        try:
            async for attempt in policy:
                with attempt:
                    return await self._once(work, write=write)
        except _Transient as e:
            log.error("masterqueue.db_unavailable", operation=name, error=repr(e.__cause__))
            raise DatabaseUnavailable(f"{name}: database unavailable: {e.__cause__}") from e
        raise AssertionError("unreachable: the retry policy re-raises")  # pragma: no cover

    async def run_idempotent(self, work: Work[T], *, name: str = "db") -> T:
        """:meth:`run` for submissions keyed by an idempotency key.

        Two concurrent submissions with one key both insert; the unique key index refuses the
        second, whose transaction then runs again and finds the first one's record.
        """
        try:
            return await self.run(work, name=name)
        except sa.exc.IntegrityError:
            log.info("masterqueue.idempotency_race", operation=name)
            return await self.run(work, name=name)

    async def _once(self, work: Work[T], *, write: bool) -> T:
        async with AsyncExitStack() as stack:
            if write and self.is_sqlite:
                await stack.enter_async_context(self._write_lock)
            try:
                conn = await stack.enter_async_context(self.engine.connect())
                if write and self.is_sqlite:
                    conn = await conn.execution_options(podgrid_write=True)
                async with conn.begin():
                    return await work(conn)
            except (sa.exc.DBAPIError, ConnectionError, TimeoutError) as e:
                if is_transient(e):
                    raise _Transient(str(e)) from e
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def now_ms() -> int:
    """The current wall-clock time as epoch milliseconds."""
    return time.time_ns() // 1_000_000
