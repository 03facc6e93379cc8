"""HTTPS for every PoD Grid HTTP service, and whom its clients trust.

Serving: :func:`listen_tls` turns a service's ``--tls-cert/--tls-key`` into the
``ssl.SSLContext`` for its listening socket. Without them a service serves plain HTTP only on a
loopback address, or when the operator said ``--insecure-http``: tokens and certificates never
cross a network in clear by accident (:class:`PlainHTTPRefused` says so at start-up).

Trusting: clients (the ``podgrid`` commands, agents, brokers, the master queue) verify every
HTTPS peer against the system's CAs plus the PEM bundle in ``PODGRID_CA_FILE`` (``podgrid up``
makes a local CA and hands it out that way and through ``endpoints.json``; a command may also
call :func:`trust_ca_file`). :func:`client_session` is the one way PoD Grid opens an
``aiohttp.ClientSession``, so no call forgets the trust. Brokers are different: an agent
trusts only the master queue's broker CA for them, and checks the name of the request
(:mod:`podgrid.masterqueue.broker_ca`), see :func:`pinned_context`.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path
from typing import Any, Final

import aiohttp

from podgrid.config import environment
from podgrid.errors import PodGridError

__all__ = [
    "CA_FILE_ENV",
    "PlainHTTPRefused",
    "TLSFilesError",
    "client_session",
    "is_loopback",
    "listen_tls",
    "pinned_context",
    "scheme",
    "trust_ca_file",
    "trust_context",
]

CA_FILE_ENV: Final = environment.CA_FILE
_extra_ca_files: list[Path] = []


class TLSFilesError(PodGridError, ValueError):
    """A certificate, key or CA file that cannot be used (missing, unreadable, not PEM)."""


class PlainHTTPRefused(PodGridError, ValueError):
    """A service asked to serve plain HTTP on an address other hosts can reach."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_tls(
    host: str, cert_file: Path | None, key_file: Path | None, *, insecure_http: bool = False
) -> ssl.SSLContext | None:
    """The server context for ``cert_file``/``key_file``; None for plain HTTP where allowed.

    Raises :class:`PlainHTTPRefused` for plain HTTP on a non-loopback ``host`` without
    ``insecure_http``, :class:`TLSFilesError` for one file without the other or a bad file.
    """
    if (cert_file is None) != (key_file is None):
        raise TLSFilesError("--tls-cert and --tls-key go together: give both or neither")
    if cert_file is None or key_file is None:
        if not insecure_http and not is_loopback(host):
            raise PlainHTTPRefused(
                f"refusing plain HTTP on {host}: other hosts would see tokens in clear; "
                "give --tls-cert and --tls-key, listen on 127.0.0.1, or say --insecure-http"
            )
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise TLSFilesError(f"cannot use {cert_file} with {key_file}: {e}") from e
    return context


def scheme(context: ssl.SSLContext | None) -> str:
    """``https`` when a service listens with TLS, else ``http``."""
    return "http" if context is None else "https"


def trust_ca_file(path: Path) -> None:
    """Trust the CAs in ``path`` too, for every session this process opens from now on."""
    if path not in _extra_ca_files:
        _extra_ca_files.append(path)


def _ca_files() -> list[Path]:
    files = list(_extra_ca_files)
    if named := os.environ.get(CA_FILE_ENV):
        files.append(Path(named))
    return files


def _load(context: ssl.SSLContext, path: Path) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as e:
        raise TLSFilesError(f"cannot read the CA file {path}: {e}") from e


def trust_context() -> ssl.SSLContext:
    """A client context trusting the system's CAs and PoD Grid's (``PODGRID_CA_FILE``)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in _ca_files():
        _load(context, path)
    return context


def pinned_context(ca_pem: str) -> ssl.SSLContext:
    """A client context trusting ``ca_pem`` alone (no system CA): how agents see brokers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=ca_pem)
    return context


def client_session(**kwargs: Any) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` that verifies HTTPS peers with :func:`trust_context`."""
    connector = aiohttp.TCPConnector(ssl=trust_context())
    return aiohttp.ClientSession(connector=connector, **kwargs)
