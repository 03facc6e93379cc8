"""Per-cluster TLS: one private CA per broker, and the certificates it signs.

Every cluster gets its own CA (EC P-256, valid for the request's ttl plus a margin), so a
certificate of one cluster opens no other. The CA signs the scheduler's certificate, one
client certificate for the owner, and one certificate per attached worker (EC keys: issuing
one costs about a millisecond, so no pool is kept; see ``benchmarks/attach_storm.py``).
:meth:`ClusterTLS.write` puts the scheduler's material in a private directory (0700, files
0600) for ``distributed.Security``; connection info and attach answers carry PEM strings.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from podgrid.config.runtime import write_private_file

Role = Literal["scheduler", "client", "worker"]

CLOCK_SKEW_S = 300  # seconds a certificate is valid before "now", for hosts with skewed clocks
VALIDITY_MARGIN_S = 3600  # seconds a certificate outlives the cluster's ttl
_ORG = "PoD Grid"


@dataclass(frozen=True, slots=True)
class CertPair:
    """A PEM certificate and its PEM private key (unencrypted: files are 0600)."""

    cert_pem: str
    key_pem: str


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def default_hosts() -> list[str]:
    """The names a certificate of this host should carry: loopback and the host's names."""
    return ["127.0.0.1", "localhost", socket.gethostname(), socket.getfqdn()]


class ClusterCA:
    """A cluster's private certificate authority; signs certificates valid ``validity_s``."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self._cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def create(cls, cluster: str, validity_s: float) -> ClusterCA:
        """A new CA for ``cluster`` (its common name), valid ``validity_s`` from now."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = _name(f"PoD Grid cluster CA {cluster}")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=CLOCK_SKEW_S))
            .not_valid_after(now + dt.timedelta(seconds=validity_s))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def not_valid_after(self) -> dt.datetime:
        """When the CA (and so every certificate it signed) stops being valid."""
        return self._cert.not_valid_after_utc

    def issue(self, common_name: str, hosts: list[str] | None = None) -> CertPair:
        """A certificate for ``common_name`` usable as TLS server and client (Dask needs both).

        It expires with the CA; ``hosts`` (default: :func:`default_hosts`) go in the SAN.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=CLOCK_SKEW_S))
            .not_valid_after(self.not_valid_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(_san(hosts if hosts is not None else default_hosts()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return CertPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


class ClusterTLS:
    """Everything TLS of one cluster: the CA, the scheduler's and the owner's certificates."""

    def __init__(self, cluster: str, validity_s: float, hosts: list[str] | None = None) -> None:
        self.ca = ClusterCA.create(cluster, validity_s + VALIDITY_MARGIN_S)
        self.hosts = hosts if hosts is not None else default_hosts()
        self.scheduler = self.ca.issue(f"{cluster}-scheduler", self.hosts)
        self.client = self.ca.issue(f"{cluster}-owner", self.hosts)
        self.directory: Path | None = None

    def worker(self, name: str) -> CertPair:
        """A fresh certificate for one attached worker, named after it."""
        return self.ca.issue(name, self.hosts)

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

    def client_security(self) -> Any:
        """``distributed.Security`` with the owner's credentials (what ``info -c`` prints)."""
        from distributed.security import Security

        return Security(  # type: ignore[no-untyped-call]
            require_encryption=True,
            tls_ca_file=self.ca.cert_pem,
            tls_client_cert=self.client.cert_pem,
            tls_client_key=self.client.key_pem,
        )
