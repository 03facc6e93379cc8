"""Per-cluster TLS: one private CA per broker, and the certificates it signs from CSRs.

Every cluster gets its own CA (EC P-256, valid for the request's ttl plus a margin), so a
certificate of one cluster opens no other. The broker generates only its own keys (the CA's and
the scheduler's); every other key stays where it was made: an agent sends a CSR with its
attach, the owner sends one through the master queue (``POST /v1/sign``), and the CA signs it
(:meth:`podgrid.pki.CertificateAuthority.sign`) after :func:`load_csr` checked it. The
signed certificate's subject is the broker's choice, never the CSR's: ``worker:<reserved
name>`` or ``owner:<user>`` (:func:`worker_cn`, :func:`owner_cn`), so the scheduler can tell a
worker from the owner by the certificate alone (:mod:`podgrid.broker.guard`). Owner
certificates are client-only; worker certificates are client and server (a Dask worker listens
too). They expire with the cluster. :meth:`ClusterTLS.write` puts the scheduler's material in a
private directory (0700, files 0600) for ``distributed.Security``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from podgrid.config.runtime import write_private_file
from podgrid.pki import BadCSR, CertificateAuthority, default_hosts, load_csr

__all__ = [
    "BadCSR",
    "ClusterTLS",
    "load_csr",
    "owner_cn",
    "peer_common_name",
    "scheduler_cn",
    "worker_cn",
]

VALIDITY_MARGIN_S = 3600  # seconds a certificate outlives the cluster's ttl
WORKER_PREFIX = "worker:"
OWNER_PREFIX = "owner:"
SCHEDULER_PREFIX = "scheduler:"
CN_MAX = 64  # X.509's upper bound for a common name


def _cn(prefix: str, name: str) -> str:
    return (prefix + name)[:CN_MAX]


def worker_cn(name: str) -> str:
    """The common name of the worker reserved as ``name`` (never an owner's: the prefix)."""
    return _cn(WORKER_PREFIX, name)


def owner_cn(owner: str) -> str:
    """The common name of the cluster owner's client certificate."""
    return _cn(OWNER_PREFIX, owner)


def scheduler_cn(cluster: str) -> str:
    """The common name of the cluster's scheduler certificate."""
    return _cn(SCHEDULER_PREFIX, cluster)


def peer_common_name(peercert: object) -> str | None:
    """The common name in ``ssl.SSLSocket.getpeercert()``'s answer (None when there is none)."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for attr in rdn:
            if len(attr) == 2 and attr[0] == "commonName":
                return str(attr[1])
    return None


class ClusterTLS:
    """Everything TLS of one cluster: the CA, the scheduler's certificate, and CSR signing.

    ``owner`` is the request's owner: the one client the scheduler admits. Certificates signed
    here expire at ``expires`` (epoch seconds, the cluster's end) when given.
    """

    def __init__(
        self,
        cluster: str,
        validity_s: float,
        hosts: list[str] | None = None,
        *,
        owner: str,
        expires: float | None = None,
    ) -> None:
        self.ca = CertificateAuthority.create(
            f"PoD Grid cluster CA {cluster}", validity_s + VALIDITY_MARGIN_S
        )
        self.hosts = hosts if hosts is not None else default_hosts()
        self.scheduler_cn = scheduler_cn(cluster)
        self.scheduler = self.ca.issue(self.scheduler_cn, self.hosts)
        self.owner_cn = owner_cn(owner)
        self.not_after = None if expires is None else dt.datetime.fromtimestamp(expires, dt.UTC)
        self.directory: Path | None = None

    def sign_worker(self, csr_pem: str, name: str) -> str:
        """The certificate of the worker reserved as ``name``, for the agent's CSR (BadCSR)."""
        return self.ca.sign(load_csr(csr_pem), worker_cn(name), "worker", self.not_after)

    def sign_owner(self, csr_pem: str) -> str:
        """The owner's client certificate for the owner's CSR (BadCSR when unacceptable)."""
        return self.ca.sign(load_csr(csr_pem), self.owner_cn, "owner", self.not_after)

    def write(self, directory: Path) -> Path:
        """Write CA and scheduler material to ``directory`` (created 0700, files 0600)."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        write_private_file(directory / "ca.pem", self.ca.cert_pem)
        write_private_file(directory / "scheduler.pem", self.scheduler.cert_pem)
        write_private_file(directory / "scheduler.key", self.scheduler.key_pem)
        self.directory = directory
        return directory

    def scheduler_security(self) -> Any:
        """``distributed.Security`` for the scheduler: TLS required, certificates checked."""
        from distributed.security import Security

        if self.directory is None:
            raise RuntimeError("ClusterTLS.write() must run before scheduler_security()")
        d = self.directory
        return Security(  # type: ignore[no-untyped-call]
            require_encryption=True,
            tls_ca_file=str(d / "ca.pem"),
            tls_scheduler_cert=str(d / "scheduler.pem"),
            tls_scheduler_key=str(d / "scheduler.key"),
            tls_client_cert=str(d / "scheduler.pem"),
            tls_client_key=str(d / "scheduler.key"),
        )
