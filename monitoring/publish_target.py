"""Where a broker, agent or master queue publishes, and the publisher for it.

One rule for every publisher: ``udp://host:port`` sends ApMon datagrams; an
``http(s)://`` registry URL is published to with ``POST /publish`` when the registry's
token is known, and otherwise with ApMon datagrams to that host on the ApMon port (so a
plain ``podRegistryURL`` from the configuration hierarchy works with no extra setting).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from podgrid.monitoring.apmon_publisher import ApMonPublisher
from podgrid.monitoring.client import HttpPublisher, Publisher

DEFAULT_APMON_PORT = 8884  # MonALISA's ApMon UDP port
HTTP_ATTEMPTS = 2  # a publish is repeated every interval anyway: do not pile up retries
HTTP_DEADLINE_S = 5.0


def publish_target(registry: str, token: str | None) -> str:
    """The target for ``registry`` (a ``udp://`` or ``http(s)://`` URL); ValueError if neither."""
    parts = urlsplit(registry)
    if not parts.hostname or parts.scheme not in ("udp", "http", "https"):
        raise ValueError(f"registry must be udp://HOST:PORT or http(s)://HOST:PORT: {registry!r}")
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"registry port is not a number in 1-65535: {registry!r}") from e
    if parts.scheme == "udp":
        return f"udp://{parts.hostname}:{port or DEFAULT_APMON_PORT}"
    if token:
        return registry.rstrip("/")
    return f"udp://{parts.hostname}:{DEFAULT_APMON_PORT}"


def open_publisher(
    registry: str, token: str | None, apmon_password: str | None = None
) -> Publisher:
    """The publisher for :func:`publish_target` of ``registry`` (HTTP needs ``token``).

    ApMon datagrams carry ``apmon_password``, which a registry started by ``podgrid up`` or
    ``podgrid monitoring serve`` requires by default.
    """
    target = publish_target(registry, token)
    if target.startswith("udp://"):
        parts = urlsplit(target)
        return ApMonPublisher(
            parts.hostname or "", parts.port or DEFAULT_APMON_PORT, password=apmon_password or ""
        )
    return HttpPublisher(target, token or "", attempts=HTTP_ATTEMPTS, deadline_s=HTTP_DEADLINE_S)
