"""X.509 for PoD Grid: small certificate authorities, CSR checks and the certificates they sign.

Used for two kinds of CA. Every cluster gets its own (:mod:`podgrid.broker.tls`): it signs the
scheduler's, the workers' and the owner's certificates. The master queue keeps one for its
brokers' HTTPS servers (:mod:`podgrid.masterqueue.broker_ca`), and ``podgrid up`` makes one for
its own services (:mod:`podgrid.localca`). Keys are EC P-256; a key is generated only where it
is used, everybody else sends a CSR (:func:`load_csr` checks it, :meth:`CertificateAuthority.sign`
decides what the certificate says, never the CSR).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from podgrid.errors import PodGridError
from podgrid.protocol.csr import MAX_CSR_CHARS

Role = Literal["scheduler", "owner", "worker"]

CLOCK_SKEW_S = 300  # seconds a certificate is valid before "now", for hosts with skewed clocks
_ORG = "PoD Grid"
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


class BadCSR(PodGridError, ValueError):
    """A certificate signing request that is not acceptable (unparsable, forged, weak key)."""


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    """Parse and check a PEM CSR: its self-signature holds and its key is EC or RSA, strong enough.

    Raises :class:`BadCSR` with the reason otherwise. The CSR's subject and extensions are
    ignored by :meth:`CertificateAuthority.sign`: the broker alone decides what a certificate says.
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


class CertificateAuthority:
    """A private certificate authority (EC P-256) and the certificates it signs."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self._cert = cert
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def create(cls, title: str, validity_s: float) -> CertificateAuthority:
        """A new CA called ``title`` (its common name), valid ``validity_s`` from now."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = _name(title)
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

    @classmethod
    def load(cls, cert_pem: str, key_pem: str) -> CertificateAuthority:
        """A CA from its PEM certificate and PEM (unencrypted) key, as :meth:`key_pem` wrote."""
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("a CA key must be an EC key")
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        if cert.public_key() != key.public_key():
            raise ValueError("the CA certificate is not the key's")
        return cls(key, cert)

    def key_pem(self) -> str:
        """The CA's private key, PEM: for a 0600 file on the host that made it, nowhere else."""
        return _key_pem(self._key)

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

    def sign_server(
        self, csr: x509.CertificateSigningRequest, names: list[str], not_after: dt.datetime
    ) -> str:
        """A server-only certificate for ``csr``'s key, for the host ``names`` (the SAN, the CN).

        What the certificate says is the caller's decision, never the CSR's.
        """
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self._cert.subject)
            .public_key(csr.public_key())  # load_csr checked: EC or RSA
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=CLOCK_SKEW_S))
            .not_valid_after(max(min(not_after, self.not_valid_after), now))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_san(names), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()
