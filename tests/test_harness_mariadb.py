"""The MariaDB harness itself: a real server that SQLAlchemy (aiomysql) can use and restart."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.harness.mariadb import MariaDB


async def test_fresh_database_is_empty_and_usable(mariadb: MariaDB) -> None:
    name = mariadb.create_database()
    engine = create_async_engine(mariadb.url(name))
    try:
        async with engine.begin() as conn:
            version = (await conn.execute(sa.text("SELECT VERSION()"))).scalar_one()
            tables = (await conn.execute(sa.text("SHOW TABLES"))).all()
            await conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (1), (2)"))
        async with engine.connect() as conn:
            count = (await conn.execute(sa.text("SELECT COUNT(*) FROM t"))).scalar_one()
    finally:
        await engine.dispose()
        mariadb.sql(f"DROP DATABASE `{name}`")
    assert "MariaDB" in version
    assert tables == []
    assert count == 2


async def test_restart_keeps_data(mariadb: MariaDB) -> None:
    if mariadb.datadir is None:
        # An external server (PODGRID_TEST_MYSQL_URL) cannot be restarted by the tests.
        assert mariadb.sql("SELECT 1").strip() == "1"
        return
    name = mariadb.create_database()
    mariadb.sql(f"CREATE TABLE `{name}`.t (v VARCHAR(10)); INSERT INTO `{name}`.t VALUES ('kept')")
    mariadb.restart()
    try:
        assert mariadb.sql(f"SELECT v FROM `{name}`.t").strip() == "kept"
    finally:
        mariadb.sql(f"DROP DATABASE `{name}`")
