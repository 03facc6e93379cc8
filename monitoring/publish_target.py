"""Where a broker, agent or master queue publishes, and the publisher for it.

One rule for every publisher: ``udp://host:port`` sends ApMon datagrams; an
``http(s)://`` registry URL is published to with ``POST /publish`` when the registry's
token is known, and otherwise with ApMon datagrams to that host on the ApMon port (so a
plain ``podRegistryURL`` from the configuration hierarchy works with no extra setting).
A list of registries (commas or whitespace between them) is published to in full, every
registry of it each time (:class:`FanOutPublisher`): each one knows every server, so an
agent finds a new server whichever registry it asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import structlog

from podgrid.errors import CallFailed
from podgrid.monitoring.apmon_publisher import ApMonPublisher, ParamValue
from podgrid.monitoring.client import HttpPublisher, Publisher
from podgrid.monitoring.registries import split_urls

log = structlog.get_logger("podgrid.monitoring")

DEFAULT_APMON_PORT = 8884  # MonALISA's ApMon UDP port
HTTP_ATTEMPTS = 2  # a publish is repeated every interval anyway: do not pile up retries
HTTP_DEADLINE_S = 5.0


def _target(registry: str, token: str | None) -> str:
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


def publish_targets(registry: str, token: str | None) -> list[str]:
    """One target per registry of the list ``registry``, duplicates dropped; ValueError if bad."""
    urls = split_urls(registry)
    if not urls:
        raise ValueError(f"registry must be udp://HOST:PORT or http(s)://HOST:PORT: {registry!r}")
    targets: list[str] = []
    for url in urls:
        target = _target(url, token)
        if target not in targets:
            targets.append(target)
    return targets


def publish_target(registry: str, token: str | None) -> str:
    """The target(s) for ``registry`` (``udp://`` or ``http(s)://`` URLs), comma-joined."""
    return ",".join(publish_targets(registry, token))


def _open_one(target: str, token: str | None, apmon_password: str | None) -> Publisher:
    if target.startswith("udp://"):
        parts = urlsplit(target)
        return ApMonPublisher(
            parts.hostname or "", parts.port or DEFAULT_APMON_PORT, password=apmon_password or ""
        )
    return HttpPublisher(target, token or "", attempts=HTTP_ATTEMPTS, deadline_s=HTTP_DEADLINE_S)


def open_publisher(
    registry: str, token: str | None, apmon_password: str | None = None
) -> Publisher:
    """The publisher for :func:`publish_targets` of ``registry`` (HTTP needs ``token``).

    ApMon datagrams carry ``apmon_password``, which a registry started by ``podgrid up`` or
    ``podgrid monitoring serve`` requires by default. Several targets: a
    :class:`FanOutPublisher` over one publisher each.
    """
    targets = publish_targets(registry, token)
    publishers = [_open_one(t, token, apmon_password) for t in targets]
    return publishers[0] if len(publishers) == 1 else FanOutPublisher(publishers, targets)


class FanOutPublisher:
    """Publishes every parameter set to every registry at once.

    A registry that is down costs only its own publication (logged); the call fails only
    when every registry refused, so a broker keeps publishing while one registry restarts.
    """

    def __init__(self, publishers: Sequence[Publisher], names: Sequence[str]) -> None:
        self.publishers = list(publishers)
        self.names = list(names)

    async def send(
        self,
        cluster: str,
        node: str,
        params: Mapping[str, ParamValue],
        time_s: float | None = None,
    ) -> int:
        """Send to all registries; returns the sum of what each reports sent or stored."""
        results = await asyncio.gather(
            *(p.send(cluster, node, params, time_s) for p in self.publishers),
            return_exceptions=True,
        )
        sent = 0
        failed: list[CallFailed] = []
        for name, result in zip(self.names, results, strict=True):
            if isinstance(result, CallFailed):
                failed.append(result)
                log.warning("registry.publish_failed", registry=name, error=str(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                sent += result
        if failed and len(failed) == len(self.publishers):
            raise failed[0]
        return sent

    async def close(self) -> None:
        """Close every publisher."""
        for publisher in self.publishers:
            await publisher.close()
