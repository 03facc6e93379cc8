"""The local CA of ``podgrid up``: HTTPS for its registry and master queue, made per run.

A fresh CA is made every time the local grid starts; it signs one certificate for each
service (``127.0.0.1`` and ``localhost``) and its key is then dropped: it is never written
anywhere, so nothing can sign another certificate with it later. The CA certificate goes to
``<state dir>/tls/ca.pem`` and into ``endpoints.json`` (``ca_file``), and every process of the
grid gets it in ``PODGRID_CA_FILE``; service keys are 0600 files in ``<state dir>/tls``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from podgrid.config.runtime import private_dir, write_private_file
from podgrid.pki import CertificateAuthority

VALIDITY_S: Final = 30 * 86400  # a local grid that runs longer than this needs a restart
HOSTS: Final = ["127.0.0.1", "localhost", "::1"]


@dataclass(frozen=True, slots=True)
class ServiceFiles:
    """One service's certificate and key files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class LocalTLS:
    """The CA file and each service's files."""

    ca_file: Path
    services: dict[str, ServiceFiles]


def make_local_tls(directory: Path, services: list[str]) -> LocalTLS:
    """A new CA and one certificate per service name, written to ``directory`` (0700)."""
    private_dir(directory)
    ca = CertificateAuthority.create("PoD Grid local CA", VALIDITY_S)
    files: dict[str, ServiceFiles] = {}
    for name in services:
        pair = ca.issue(f"podgrid-{name}", HOSTS)
        found = ServiceFiles(directory / f"{name}.pem", directory / f"{name}.key")
        write_private_file(found.key, pair.key_pem)
        write_private_file(found.cert, pair.cert_pem)
        files[name] = found
    ca_file = directory / "ca.pem"
    write_private_file(ca_file, ca.cert_pem)
    return LocalTLS(ca_file, files)
