"""The master queue as the certificate authority of its brokers' HTTPS servers.

An agent shows an attach ticket to a broker and runs the certificate that broker signs, so it
must know the broker is genuine before it says anything. The master queue keeps one CA for
that (``<state dir>/broker-ca.pem``: certificate and key in one 0600 file, made on first use;
several master queues on one database share it like ``sign.key``). A broker makes its HTTPS
key itself and sends a CSR with its own request's broker token
(``POST /v1/requests/{id}/certificate``); the certificate names the request, never a host:
``request-<id>.brokers.podgrid`` (:func:`server_name`). Agents get the CA with the server list
(``GET /v1/servers``, over the master queue's own HTTPS) and trust it alone for brokers,
checking that name (``server_hostname``), so neither a datagram in the registry, nor a
listener on the broker's port, nor another request's broker can pose as this one.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Final

from podgrid.config.runtime import create_private_once
from podgrid.pki import CertificateAuthority, load_csr

__all__ = ["BrokerCAError", "load_broker_ca", "server_name", "sign_broker"]

VALIDITY_S: Final = 10 * 365 * 86400  # the broker CA itself
SUFFIX: Final = ".brokers.podgrid"
_KEY_MARK: Final = "-----BEGIN PRIVATE KEY-----"


class BrokerCAError(OSError):
    """The broker CA file exists but cannot be used."""


def server_name(request_id: int) -> str:
    """The name a broker of request ``request_id`` is certified as."""
    return f"request-{request_id}{SUFFIX}"


def load_broker_ca(path: Path) -> CertificateAuthority:
    """The broker CA in ``path`` (certificate then key, PEM), created 0600 when missing
    (:func:`podgrid.config.runtime.create_private_once`: concurrent starts share one CA)."""

    def make() -> str:
        ca = CertificateAuthority.create("PoD Grid broker CA", VALIDITY_S)
        return ca.cert_pem + ca.key_pem()

    create_private_once(path, make)
    text = path.read_text(encoding="ascii")
    cut = text.find(_KEY_MARK)
    if cut < 0:
        raise BrokerCAError(f"{path}: no private key after the CA certificate")
    try:
        return CertificateAuthority.load(text[:cut], text[cut:])
    except ValueError as e:
        raise BrokerCAError(f"{path}: not a broker CA ({e})") from e


def sign_broker(
    ca: CertificateAuthority, csr_pem: str, request_id: int, not_after: dt.datetime
) -> str:
    """The HTTPS certificate of request ``request_id``'s broker for its CSR (BadCSR if bad)."""
    return ca.sign_server(load_csr(csr_pem), [server_name(request_id)], not_after)
