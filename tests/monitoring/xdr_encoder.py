"""An independent XDR encoder for ApMon datagrams, written from the format (not the decoder).

Big-endian; 4-byte items; strings are a uint32 length, the bytes and zero padding to 4.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

STRING, INT32, FLOAT32, FLOAT64 = 0, 2, 4, 5

Param = tuple[str, int, object]  # name, type code, value


def xdr_int(value: int) -> bytes:
    return struct.pack(">i", value)


def xdr_string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    pad = (4 - len(raw) % 4) % 4
    return struct.pack(">I", len(raw)) + raw + b"\x00" * pad


def xdr_value(type_code: int, value: object) -> bytes:
    if type_code == STRING:
        assert isinstance(value, str | bytes)
        return xdr_string(value)
    if type_code == INT32:
        assert isinstance(value, int)
        return struct.pack(">i", value)
    if type_code == FLOAT32:
        assert isinstance(value, float | int)
        return struct.pack(">f", value)
    if type_code == FLOAT64:
        assert isinstance(value, float | int)
        return struct.pack(">d", value)
    assert isinstance(value, bytes)
    return value  # unknown type codes: raw bytes, for error tests


def typed(params: dict[str, str | int | float]) -> list[Param]:
    """Pick the type code an ApMon client would: str → string, int → int32, float → float64."""
    out: list[Param] = []
    for name, value in params.items():
        if isinstance(value, str):
            out.append((name, STRING, value))
        elif isinstance(value, int):
            out.append((name, INT32, value))
        else:
            out.append((name, FLOAT64, value))
    return out


def encode(
    cluster: str | bytes,
    node: str | bytes,
    params: Sequence[Param] | dict[str, str | int | float],
    *,
    password: str = "",
    version: str = "2.2.8-py",
    instance_id: int = 1234,
    seq: int = 1,
    time_s: int | None = None,
    count: int | None = None,
) -> bytes:
    """One datagram; ``count`` overrides the parameter count (for error tests)."""
    plist = typed(params) if isinstance(params, dict) else list(params)
    out = [
        xdr_string(f"v:{version}p:{password}"),
        xdr_int(instance_id),
        xdr_int(seq),
        xdr_string(cluster),
        xdr_string(node),
        xdr_int(len(plist) if count is None else count),
    ]
    for name, type_code, value in plist:
        out += [xdr_string(name), xdr_int(type_code), xdr_value(type_code, value)]
    if time_s is not None:
        out.append(xdr_int(time_s))
    return b"".join(out)
