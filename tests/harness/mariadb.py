"""A throw-away MariaDB for tests: ``mariadb-install-db`` + ``mariadbd`` in a temp datadir.

Session-scoped; the server listens on a free loopback port and its own socket, and is
stopped and deleted at the end. When ``PODGRID_TEST_MYSQL_URL`` is set
(``mysql+aiomysql://user:pw@host:port``), a fresh database on that server is used instead
and dropped at the end; :meth:`MariaDB.restart` then is not available.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.harness.ports import free_port

INSTALL_DB = "mariadb-install-db"
SERVER = "mariadbd"
START_TIMEOUT_S = 30.0
INSTALL_HINT = "apt-get install -y mariadb-server (or set PODGRID_TEST_MYSQL_URL)"


def _which(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} not found: the MariaDB tests need a real server. {INSTALL_HINT}")


@dataclass
class MariaDB:
    """One running MariaDB (throw-away or external) and the database the tests use."""

    host: str
    port: int
    user: str
    password: str
    database: str
    datadir: Path | None = None
    socket: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: Path | None = field(default=None, repr=False)

    def url(self, database: str | None = None, driver: str = "aiomysql") -> str:
        """SQLAlchemy URL for ``database`` (default: the session's database)."""
        return str(
            sa.URL.create(
                f"mysql+{driver}",
                username=self.user,
                password=self.password or None,
                host=self.host,
                port=self.port,
                database=database or self.database,
            ).render_as_string(hide_password=False)
        )

    def sql(self, statement: str) -> str:
        """Run one statement with the ``mariadb`` client (admin work: create/drop databases)."""
        cmd = [_which("mariadb"), "--batch", "--skip-column-names", "-h", self.host]
        cmd += ["-P", str(self.port), "-u", self.user, "-e", statement]
        env = {**os.environ, "MYSQL_PWD": self.password}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb client failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def create_database(self, prefix: str = "podgrid_t") -> str:
        """A fresh, empty database; returns its name (dropped with the server or by the caller)."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return name

    # -- lifecycle of a throw-away server ------------------------------------------------
    def start(self) -> None:
        """Start (or start again) the throw-away server on its datadir, port and socket."""
        if self.datadir is None or self.socket is None:
            raise RuntimeError("an external server (PODGRID_TEST_MYSQL_URL) cannot be started")
        assert self._log is not None
        cmd = [
            _which(SERVER),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            f"--pid-file={self.datadir.parent / 'mariadbd.pid'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=500",
            f"--log-error={self._log}",
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def stop(self) -> None:
        """Stop the throw-away server (SIGTERM, then SIGKILL after 30 s)."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the throw-away server, as a crash would."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def restart(self) -> None:
        """Stop and start the same server (same port and data): a database restart."""
        self.stop()
        self.start()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                self.sql("SELECT 1")
                return
            except RuntimeError as e:
                last = str(e)
                time.sleep(0.1)
        log = self._log.read_text(errors="replace")[-2000:] if self._log else ""
        raise RuntimeError(f"mariadbd did not come up on port {self.port}: {last}\n{log}")


def _throwaway(tmp: Path) -> MariaDB:
    install = _which(INSTALL_DB)
    datadir = tmp / "data"
    out = subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        pytest.fail(f"mariadb-install-db failed ({out.returncode}): {out.stderr[-2000:]}")
    last: Exception | None = None
    for _ in range(5):  # a "free" port can be taken before mariadbd binds it
        db = MariaDB(
            host="127.0.0.1",
            port=free_port(),
            user="root",
            password="",
            database="podgrid_test",
            datadir=datadir,
            socket=tmp / "mariadb.sock",
            _log=tmp / "mariadbd.log",
        )
        try:
            db.start()
        except RuntimeError as e:
            db.stop()
            last = e
            continue
        db.sql("CREATE DATABASE podgrid_test CHARACTER SET utf8mb4")
        return db
    pytest.fail(f"could not start a throw-away mariadbd: {last}")


def _external(url: str) -> MariaDB:
    u = make_url(url)
    db = MariaDB(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password if isinstance(u.password, str) else "",
        database="",
    )
    db.database = db.create_database()
    return db


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """A MariaDB server with an empty ``database`` for this test session."""
    external = os.environ.get("PODGRID_TEST_MYSQL_URL")
    if external:
        db = _external(external)
        try:
            yield db
        finally:
            db.sql(f"DROP DATABASE IF EXISTS `{db.database}`")
        return
    tmp = Path(tempfile.mkdtemp(prefix="podgrid-mariadb-"))
    db = _throwaway(tmp)
    try:
        yield db
    finally:
        db.stop()
        shutil.rmtree(tmp, ignore_errors=True)
