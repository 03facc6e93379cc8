"""Per-cluster TLS: one private CA per broker, and the certificates it signs from CSRs.

Every cluster gets its own CA (EC P-256, valid for the request's ttl plus a margin), so a
certificate of one cluster opens no other. The broker generates only its own keys (the CA's and
the scheduler's); every other key stays where it was made: an agent sends a CSR with its
attach, the owner sends one through the master queue (``POST /v1/sign``), and the CA signs it
(:meth:`ClusterCA.sign`) after :func:`load_csr` checked it. The signed certificate's subject
is the broker's choice, never the CSR's: ``worker:<reserved name>`` or ``owner:<user>``
(:func:`worker_cn`, :func:`owner_cn`), so the scheduler can tell a worker from the owner by
the certificate alone (:mod:`podgrid.broker.guard`). Owner certificates are client-only;
worker certificates are client and server (a Dask worker listens too). They expire with the
cluster. :meth:`ClusterTLS.write` puts the scheduler's material in a private directory (0700,
files 0600) for ``distributed.Security``.
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
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from podgrid.config.runtime import write_private_file
from podgrid.errors import PodGridError
from podgrid.protocol.csr import MAX_CSR_CHARS

Role = Literal["scheduler", "owner", "worker"]

CLOCK_SKEW_S = 300  # seconds a certificate is valid before "now", for hosts with skewed clocks
VALIDITY_MARGIN_S = 3600  # seconds a certificate outlives the cluster's ttl
_ORG = "PoD Grid"
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
WORKER_PREFIX = "worker:"
OWNER_PREFIX = "owner:"
SCHEDULER_PREFIX = "scheduler:"
CN_MAX = 64  # X.509's upper bound for a common name


class BadCSR(PodGridError, ValueError):
    """A certificate signing request that is not acceptable (unparsable, forged, weak key)."""


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


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    """Parse and check a PEM CSR: its self-signature holds and its key is EC or RSA, strong enough.

    Raises :class:`BadCSR` with the reason otherwise. The CSR's subject and extensions are
    ignored by :meth:`ClusterCA.sign`: the broker alone decides what a certificate says.
    """
    if len(pem) > MAX_CSR_CHARS:
        raise BadCSR(f"the CSR is longer than {MAX_CSR_CHARS} characters")
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise BadCSR(f"not a PEM certificate signing request: {e}") from e
    try:
        key = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, TypeError) as e:
        raise BadCSR(f"the CSR's key cannot be read: {e}") from e
    if not valid:
        raise BadCSR("the CSR's signature does not match its key")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            raise BadCSR(f"EC curve {key.curve.name} is not accepted (P-256, P-384, P-521)")
    elif isinstance(key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise BadCSR(
                f"an RSA key of {key.key_size} bits is not accepted "
                f"({MIN_RSA_BITS} to {MAX_RSA_BITS})"
            )
    else:
        raise BadCSR(f"a {type(key).__name__} is not accepted: use an EC or RSA key")
    return csr


def peer_common_name(peercert: object) -> str | None:
    """The common name in ``ssl.SSLSocket.getpeercert()``'s answer (None when there is none)."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for attr in rdn:
            if len(attr) == 2 and attr[0] == "commonName":
                return str(attr[1])
    return None


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

    def sign(
        self,
        csr: x509.CertificateSigningRequest,
        common_name: str,
        role: Role,
        not_after: dt.datetime | None = None,
    ) -> str:
        """A PEM certificate for ``csr``'s key, saying ``common_name`` (never the CSR's subject).

        ``role`` ``owner`` makes it client-only; ``worker`` client and server (workers listen
        for their peers). It expires at ``not_after`` (at the latest with the CA).
        """
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role != "owner":
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        now = dt.datetime.now(dt.UTC)
        end = self.not_valid_after if not_after is None else min(not_after, self.not_valid_after)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(csr.public_key())  # load_csr checked: EC or RSA
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=CLOCK_SKEW_S))
            .not_valid_after(max(end, now))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


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
        self.ca = ClusterCA.create(cluster, validity_s + VALIDITY_MARGIN_S)
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
