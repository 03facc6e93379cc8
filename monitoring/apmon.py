"""Decoder for ApMon UDP datagrams, as MonALISA's ApMon clients (Python, C, Java, Perl) send them.

XDR, big-endian, every item 4-byte aligned; a string is a uint32 length, the bytes, and zero
padding to a multiple of 4. In order: string ``v:<version>p:<password>``, int instance id,
int sequence number, string cluster, string node, int parameter count, then per parameter
string name, int type code and value (0 string, 2 int32, 4 float32, 5 float64), then an
optional int timestamp in seconds. Everything wrong with a datagram raises one
:class:`DatagramError` whose ``reason`` is a short label fit for a metric.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from podgrid.errors import PodGridError
from podgrid.monitoring.history import Value

TYPE_STRING = 0
TYPE_INT32 = 2
TYPE_FLOAT32 = 4
TYPE_FLOAT64 = 5

MAX_PARAMS = 4096  # a UDP datagram cannot carry more (>= 12 bytes per parameter)
MAX_NAME_CHARS = 256  # cluster, node and parameter names
MAX_VALUE_CHARS = 8192  # string values

# Labels of DatagramError.reason (and of the drop counter).
REASONS = (
    "truncated",
    "bad_header",
    "bad_type",
    "bad_password",
    "too_many_params",
    "bad_utf8",
    "bad_name",
    "bad_value",
    "bad_timestamp",
    "trailing",
)

_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_FLOAT = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")
_FORBIDDEN_IN_NAMES = frozenset("/|\r\n\t\x00")


class DatagramError(PodGridError, ValueError):
    """A datagram that cannot be accepted; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ApMonDatagram:
    """One decoded datagram: who sent it, for which cluster/node, and the values."""

    version: str
    password: str
    instance_id: int
    seq: int
    cluster: str
    node: str
    params: tuple[tuple[str, Value], ...]
    time_s: int | None


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise DatagramError("truncated", f"need {n} bytes at offset {self.pos}")

    def int32(self) -> int:
        self._need(4)
        (v,) = _INT.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def float32(self) -> float:
        self._need(4)
        (v,) = _FLOAT.unpack_from(self.data, self.pos)
        self.pos += 4
        return float(v)

    def float64(self) -> float:
        self._need(8)
        (v,) = _DOUBLE.unpack_from(self.data, self.pos)
        self.pos += 8
        return float(v)

    def string(self) -> str:
        self._need(4)
        (n,) = _UINT.unpack_from(self.data, self.pos)
        padded = (n + 3) & ~3
        self._need(4 + padded)
        raw = self.data[self.pos + 4 : self.pos + 4 + n]
        self.pos += 4 + padded
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DatagramError("bad_utf8", f"string at offset {self.pos - 4 - padded}") from e

    def remaining(self) -> int:
        return len(self.data) - self.pos


def _name(text: str, what: str) -> str:
    if not text or len(text) > MAX_NAME_CHARS or not _FORBIDDEN_IN_NAMES.isdisjoint(text):
        raise DatagramError("bad_name", f"{what} {text[:40]!r}")
    return text


def _value(reader: _Reader, type_code: int, name: str) -> Value:
    if type_code == TYPE_STRING:
        text = reader.string()
        if len(text) > MAX_VALUE_CHARS or "\n" in text or "\r" in text:
            raise DatagramError("bad_value", f"string value of {name!r}")
        return text
    if type_code == TYPE_INT32:
        return reader.int32()
    if type_code == TYPE_FLOAT32:
        number = reader.float32()
    elif type_code == TYPE_FLOAT64:
        number = reader.float64()
    else:
        raise DatagramError("bad_type", f"type code {type_code} of {name!r}")
    if not math.isfinite(number):
        raise DatagramError("bad_value", f"non-finite value of {name!r}")
    return number


def _header(text: str) -> tuple[str, str]:
    cut = text.find("p:", 2)
    if not text.startswith("v:") or cut < 0:
        raise DatagramError("bad_header", f"header {text[:40]!r}")
    return text[2:cut], text[cut + 2 :]


def decode_datagram(data: bytes) -> ApMonDatagram:
    """Decode one datagram, or raise :class:`DatagramError` naming what is wrong."""
    reader = _Reader(data)
    version, password = _header(reader.string())
    instance_id = reader.int32()
    seq = reader.int32()
    cluster = _name(reader.string(), "cluster")
    node = _name(reader.string(), "node")
    count = reader.int32()
    if count < 0 or count > MAX_PARAMS:
        raise DatagramError("too_many_params", f"parameter count {count}")
    if count * 12 > reader.remaining():
        raise DatagramError("truncated", f"{count} parameters cannot fit")
    params: list[tuple[str, Value]] = []
    for _ in range(count):
        name = _name(reader.string(), "parameter")
        params.append((name, _value(reader, reader.int32(), name)))
    time_s: int | None = None
    left = reader.remaining()
    if left == 4:
        time_s = reader.int32()
        if time_s <= 0:
            raise DatagramError("bad_timestamp", f"timestamp {time_s}")
    elif left:
        raise DatagramError("trailing", f"{left} bytes after the parameters")
    return ApMonDatagram(version, password, instance_id, seq, cluster, node, tuple(params), time_s)
