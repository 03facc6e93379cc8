"""Sending ApMon datagrams: the XDR encoder and an async UDP publisher.

The datagrams are laid out exactly as MonALISA's ApMon clients send them (big-endian XDR,
4-byte aligned): header string ``v:<version>p:<password>``, instance id, sequence number,
cluster, node, parameter count, then per parameter name, type code and value, then an
optional timestamp in seconds. Like ApMon, a parameter set that does not fit in one
datagram of about 1440 bytes is split over several, each with its own sequence number.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Self

import structlog
from prometheus_client import Counter

log = structlog.get_logger("podgrid.monitoring.apmon_publisher")

APMON_VERSION: Final = "2.2.0-podgrid"
MAX_DATAGRAM_BYTES: Final = 1440  # bytes, ApMon's default split size
MAX_UDP_PAYLOAD_BYTES: Final = 65_507  # bytes, the most one IPv4 datagram can carry
MAX_SEQ: Final = 2_000_000_000  # ApMon wraps its sequence number here
UDP_WARN_EVERY_S: Final = 60.0  # seconds between warnings about an unreachable registry

TYPE_STRING: Final = 0
TYPE_INT32: Final = 2
TYPE_FLOAT32: Final = 4
TYPE_FLOAT64: Final = 5
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

ParamValue = str | int | float

DATAGRAMS_SENT = Counter(
    "podgrid_registry_client_datagrams_sent_total",
    "ApMon datagrams handed to the kernel by this process.",
)
SEND_FAILURES = Counter(
    "podgrid_registry_client_send_failures_total",
    "Publications to the registry that failed, by transport and reason.",
    ["transport", "reason"],
)


def xdr_string(text: str) -> bytes:
    """An XDR string: uint32 length, UTF-8 bytes, zero padding to a multiple of 4."""
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw + b"\0" * (-len(raw) % 4)


def encode_value(value: ParamValue) -> bytes:
    """Type code and XDR value of one parameter, chosen as ApMon clients choose it.

    Strings are type 0, integers that fit in int32 type 2, other numbers float64 (type 5).
    """
    if isinstance(value, str):
        return struct.pack(">i", TYPE_STRING) + xdr_string(value)
    if isinstance(value, int) and _INT32_MIN <= value <= _INT32_MAX:
        return struct.pack(">ii", TYPE_INT32, int(value))
    if isinstance(value, int | float):
        return struct.pack(">id", TYPE_FLOAT64, float(value))
    raise TypeError(f"ApMon parameter value must be str, int or float, not {type(value).__name__}")


class ApMonEncoder:
    """Builds the datagrams of one ApMon sender (one instance id, increasing sequence numbers)."""

    def __init__(
        self,
        *,
        password: str = "",
        instance_id: int | None = None,
        max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
    ) -> None:
        self.instance_id = (
            random.randint(0, _INT32_MAX - 1) if instance_id is None else instance_id  # noqa: S311
        )
        self.max_datagram_bytes = max_datagram_bytes
        self.next_seq = 0
        self._header = xdr_string(f"v:{APMON_VERSION}p:{password}")

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = 0 if seq + 1 >= MAX_SEQ else seq + 1
        return seq

    def encode(
        self,
        cluster: str,
        node: str,
        params: Mapping[str, ParamValue],
        time_s: float | None = None,
    ) -> list[bytes]:
        """The datagrams carrying ``params`` for (cluster, node); none for an empty mapping.

        Parameters are packed in order until a datagram would exceed the split size; a
        single parameter larger than that goes alone in its own datagram.
        """
        names = xdr_string(cluster) + xdr_string(node)
        trailer = b"" if time_s is None else struct.pack(">i", math.floor(time_s))
        fixed = len(self._header) + 8 + len(names) + 4 + len(trailer)
        groups: list[list[bytes]] = []
        size = fixed
        for name, value in params.items():
            chunk = xdr_string(name) + encode_value(value)
            if not groups or (size + len(chunk) > self.max_datagram_bytes and groups[-1]):
                groups.append([])
                size = fixed
            groups[-1].append(chunk)
            size += len(chunk)
        return [
            b"".join(
                [
                    self._header,
                    struct.pack(">ii", self.instance_id, self._take_seq()),
                    names,
                    struct.pack(">i", len(group)),
                    *group,
                    trailer,
                ]
            )
            for group in groups
        ]


class _SendErrors(asyncio.DatagramProtocol):
    """Counts asynchronous send errors (ICMP port unreachable and the like) instead of raising.

    A registry that is down answers every datagram with an error: warn at most once per
    :data:`UDP_WARN_EVERY_S` (saying how many were not logged), count every one.
    """

    def __init__(self) -> None:
        self._warned_at: float | None = None
        self._unlogged = 0

    def error_received(self, exc: Exception) -> None:
        SEND_FAILURES.labels(transport="udp", reason=type(exc).__name__).inc()
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < UDP_WARN_EVERY_S:
            self._unlogged += 1
            return
        log.warning("registry_client.udp_error", error=repr(exc), not_logged=self._unlogged)
        self._warned_at, self._unlogged = now, 0


class ApMonPublisher:
    """Async ApMon UDP publisher; never raises on a send failure, it logs and counts it.

    Use as ``async with ApMonPublisher(host, port) as pub: await pub.send(...)``; the
    socket is also opened lazily on the first send, and closed by :meth:`close`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str = "",
        instance_id: int | None = None,
        *,
        max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.encoder = ApMonEncoder(
            password=password, instance_id=instance_id, max_datagram_bytes=max_datagram_bytes
        )
        self._transport: asyncio.DatagramTransport | None = None
        self._opening = asyncio.Lock()

    @property
    def instance_id(self) -> int:
        """The ApMon instance id this publisher's datagrams carry."""
        return self.encoder.instance_id

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _open(self) -> asyncio.DatagramTransport:
        async with self._opening:
            if self._transport is None or self._transport.is_closing():
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    _SendErrors, remote_addr=(self.host, self.port)
                )
                self._transport = transport
            return self._transport

    async def send(
        self,
        cluster: str,
        node: str,
        params: Mapping[str, ParamValue],
        time_s: float | None = None,
    ) -> int:
        """Send ``params`` for (cluster, node); returns the datagrams sent (0 on failure)."""
        try:
            datagrams = self.encoder.encode(cluster, node, params, time_s)
        except TypeError as e:
            SEND_FAILURES.labels(transport="udp", reason="bad_value").inc()
            log.warning("registry_client.udp_bad_value", cluster=cluster, node=node, error=str(e))
            return 0
        try:
            transport = await self._open()
        except OSError as e:
            SEND_FAILURES.labels(transport="udp", reason="open").inc()
            log.warning(
                "registry_client.udp_open_failed", host=self.host, port=self.port, error=repr(e)
            )
            return 0
        sent = 0
        for datagram in datagrams:
            if len(datagram) > MAX_UDP_PAYLOAD_BYTES:
                SEND_FAILURES.labels(transport="udp", reason="too_large").inc()
                log.warning("registry_client.udp_too_large", cluster=cluster, bytes=len(datagram))
                continue
            transport.sendto(datagram)
            sent += 1
        DATAGRAMS_SENT.inc(sent)
        return sent

    async def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
