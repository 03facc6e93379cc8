"""A throw-away slapd for tests: temp dir, core + project schema, the default LDIF, a free port.

Used as a pytest plugin (``tests.harness.slapd`` in the root ``conftest.py``). The session
fixture ``slapd`` serves the embedded default LDIF; :func:`start_slapd` starts further private
servers (e.g. one a test stops and restarts); ``ldap_site`` adds a fresh site + CE subtree that
a test may modify freely and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import pytest
from ldap3.core.exceptions import LDAPException

from podgrid.config.hierarchy import default_ldif, schema_file
from tests.harness.ports import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
CORE_SCHEMA = "/etc/ldap/schema/core.schema"
BASE_DN = "o=podgrid"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "podgrid-test"
START_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 5

_CONF = """\
include {core}
include {schema}
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 104857600
suffix "{base}"
rootdn "{admin}"
rootpw {password}
directory {dir}/db
"""


def _require_binaries() -> None:
    missing = [p for p in (SLAPD, SLAPADD, CORE_SCHEMA) if not Path(p).exists()]
    if missing:
        pytest.fail(
            f"slapd test fixture: {', '.join(missing)} not found; install OpenLDAP with "
            "`apt-get install slapd ldap-utils`",
            pytrace=False,
        )


@dataclass
class SlapdServer:
    """A running throw-away slapd; ``url`` is what PoD Grid's ``--config`` takes."""

    directory: Path
    port: int = 0
    host: str = "127.0.0.1"
    base_dn: str = BASE_DN
    admin_dn: str = ADMIN_DN
    admin_password: str = ADMIN_PASSWORD
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``ldap://127.0.0.1:PORT/o=podgrid``."""
        return f"ldap://{self.host}:{self.port}/{self.base_dn}"

    @property
    def log_file(self) -> Path:
        """slapd's own output."""
        return self.directory / "slapd.log"

    def admin_connection(self) -> ldap3.Connection:
        """A bound ldap3 connection with write access (the rootdn); the caller unbinds it."""
        server = ldap3.Server(self.host, port=self.port, get_info=ldap3.SCHEMA)
        return ldap3.Connection(
            server, self.admin_dn, self.admin_password, auto_bind=True, raise_exceptions=True
        )

    def start(self) -> None:
        """Start slapd in the foreground as our child; retry another port on a bind race."""
        for _ in range(PORT_ATTEMPTS):
            self.port = self.port or free_port(self.host)
            with open(self.log_file, "ab") as log:
                self.process = subprocess.Popen(
                    [
                        SLAPD,
                        "-f",
                        str(self.directory / "slapd.conf"),
                        "-h",
                        f"ldap://{self.host}:{self.port}/",
                        "-d",
                        "none",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return
            self.stop()
            if "errno=98" not in self.log_file.read_text(errors="replace"):
                break
            self.log_file.write_text("")
            self.port = 0
        raise RuntimeError(f"slapd did not start; its log:\n{self.log_file.read_text()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            if not self._port_open():
                time.sleep(0.02)
                continue
            with contextlib.suppress(LDAPException):
                # A fresh Server each time: ldap3 remembers a failed one and backs off.
                server = ldap3.Server(
                    self.host, port=self.port, get_info=ldap3.NONE, connect_timeout=1
                )
                conn = ldap3.Connection(server, auto_bind=True, receive_timeout=1)
                ok = conn.search(self.base_dn, "(objectClass=*)", search_scope=ldap3.BASE)
                conn.unbind()
                if ok:
                    return True
            time.sleep(0.02)
        return False

    def _port_open(self) -> bool:
        # A plain socket probe: ldap3 leaks the socket of a refused connection.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            return probe.connect_ex((self.host, self.port)) == 0

    def stop(self) -> None:
        """Terminate slapd (SIGTERM, then SIGKILL after 10 s) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def start_slapd(ldif_path: str | None = None) -> Iterator[SlapdServer]:
    """Load ``ldif_path`` (default: the embedded default LDIF) into a fresh slapd and run it."""
    _require_binaries()
    tmp = Path(tempfile.mkdtemp(prefix="podgrid-slapd-"))
    server = SlapdServer(directory=tmp)
    try:
        (tmp / "db").mkdir()
        conf = _CONF.format(
            core=CORE_SCHEMA,
            schema=schema_file(),
            dir=tmp,
            base=BASE_DN,
            admin=ADMIN_DN,
            password=ADMIN_PASSWORD,
        )
        (tmp / "slapd.conf").write_text(conf)
        added = subprocess.run(
            [SLAPADD, "-q", "-f", str(tmp / "slapd.conf"), "-l", ldif_path or default_ldif()],
            capture_output=True,
            text=True,
            check=False,
        )
        if added.returncode != 0:
            raise RuntimeError(f"slapadd failed ({added.returncode}): {added.stderr}")
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def slapd() -> Iterator[SlapdServer]:
    """A session-wide slapd serving the embedded default LDIF (tests restore what they change)."""
    with start_slapd() as server:
        yield server


@dataclass(frozen=True)
class LdapSite:
    """A fresh site with one CE under ``ou=Sites``, private to one test."""

    site: str
    ce: str
    site_dn: str
    ce_dn: str


@pytest.fixture
def ldap_site(slapd: SlapdServer) -> Iterator[LdapSite]:
    """Add ``ou=<unique>,ou=Sites`` with ``ou=Services/ou=CE/name=<unique>-ce``; delete it after."""
    site = f"T{uuid.uuid4().hex[:10]}"
    site_dn = f"ou={site},ou=Sites,{slapd.base_dn}"
    services_dn = f"ou=Services,{site_dn}"
    ces_dn = f"ou=CE,{services_dn}"
    ce_dn = f"name={site}-ce,{ces_dn}"
    conn = slapd.admin_connection()
    try:
        conn.add(site_dn, ["organizationalUnit", "podConfig"], {"ou": site})
        conn.add(services_dn, ["organizationalUnit"], {"ou": "Services"})
        conn.add(ces_dn, ["organizationalUnit"], {"ou": "CE"})
        conn.add(ce_dn, ["podComputingElement", "podConfig"], {"name": f"{site}-ce"})
        yield LdapSite(site=site, ce=f"{site}-ce", site_dn=site_dn, ce_dn=ce_dn)
    finally:
        for dn in (ce_dn, ces_dn, services_dn, site_dn):
            with contextlib.suppress(LDAPException):
                conn.delete(dn)
        conn.unbind()
