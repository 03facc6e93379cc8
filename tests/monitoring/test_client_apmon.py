"""The ApMon encoder and UDP publisher, read back by an independent struct-based XDR reader."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog.testing
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from podgrid.monitoring.apmon_publisher import ApMonEncoder, ApMonPublisher


@dataclass
class Datagram:
    header: str
    instance_id: int
    seq: int
    cluster: str
    node: str
    params: dict[str, tuple[int, Any]]
    time_s: int | None


class Reader:
    """Reads XDR fields from a datagram, failing loudly on any misalignment."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int32(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return int(v)

    def string(self) -> str:
        (n,) = struct.unpack_from(">I", self.data, self.pos)
        start = self.pos + 4
        raw = self.data[start : start + n]
        assert len(raw) == n
        pad = self.data[start + n : start + n + (-n % 4)]
        assert pad == b"\0" * (-n % 4)
        self.pos = start + n + (-n % 4)
        return raw.decode()

    def value(self, code: int) -> Any:
        if code == 0:
            return self.string()
        if code == 2:
            return self.int32()
        fmt, size = {4: (">f", 4), 5: (">d", 8)}[code]
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return v


def read(data: bytes) -> Datagram:
    r = Reader(data)
    header, iid, seq, cluster, node = r.string(), r.int32(), r.int32(), r.string(), r.string()
    params: dict[str, tuple[int, Any]] = {}
    for _ in range(r.int32()):
        name = r.string()
        code = r.int32()
        params[name] = (code, r.value(code))
    time_s = r.int32() if r.pos < len(data) else None
    assert r.pos == len(data), "trailing bytes after the datagram"
    return Datagram(header, iid, seq, cluster, node, params, time_s)


def test_types_header_and_timestamp_are_what_apmon_sends() -> None:
    enc = ApMonEncoder(password="s3cret", instance_id=77)
    params: dict[str, str | int | float] = {
        "Address": "http://127.0.0.1:9000/a|b",
        "NeededWorkers": 3,
        "Load": 0.25,
        "Big": 2**40,
        "Neg": -(2**31),
        "Name": "é",
    }
    [raw] = enc.encode("PoD_Masters", "42", params, time_s=1_700_000_000.9)
    d = read(raw)
    assert d.header.startswith("v:")
    assert d.header.endswith("p:s3cret")
    assert (d.instance_id, d.seq, d.cluster, d.node) == (77, 0, "PoD_Masters", "42")
    assert d.params == {
        "Address": (0, "http://127.0.0.1:9000/a|b"),
        "NeededWorkers": (2, 3),
        "Load": (5, 0.25),
        "Big": (5, float(2**40)),
        "Neg": (2, -(2**31)),
        "Name": (0, "é"),
    }
    assert d.time_s == 1_700_000_000


def test_sequence_numbers_increase_and_no_timestamp_when_not_given() -> None:
    enc = ApMonEncoder()
    seqs = [read(enc.encode("c", "n", {"x": i})[0]).seq for i in range(3)]
    assert seqs == [0, 1, 2]
    assert read(enc.encode("c", "n", {"x": 1})[0]).time_s is None
    assert enc.encode("c", "n", {}) == []


def test_large_sets_are_split_below_1440_bytes_without_losing_a_parameter() -> None:
    enc = ApMonEncoder(instance_id=5)
    params = {f"param_{i:03d}": "v" * 40 for i in range(100)}
    raws = enc.encode("PoD_Agents_CERN", "agent-1", params, time_s=1000)
    assert len(raws) > 1
    assert all(len(r) <= 1440 for r in raws)
    decoded = [read(r) for r in raws]
    assert [d.seq for d in decoded] == list(range(len(raws)))
    merged: dict[str, Any] = {}
    for d in decoded:
        assert (d.cluster, d.node, d.time_s) == ("PoD_Agents_CERN", "agent-1", 1000)
        merged.update({k: v for k, (_, v) in d.params.items()})
    assert merged == params


def test_a_parameter_bigger_than_the_split_size_goes_alone() -> None:
    raws = ApMonEncoder().encode("c", "n", {"a": 1, "huge": "x" * 3000, "b": 2})
    assert [sorted(read(r).params) for r in raws] == [["a"], ["huge"], ["b"]]


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=30),
        st.one_of(
            st.text(max_size=200),
            st.integers(min_value=-(2**63), max_value=2**63),
            st.floats(allow_nan=False),
        ),
        max_size=40,
    )
)
def test_any_parameter_set_reads_back(params: dict[str, Any]) -> None:
    merged: dict[str, Any] = {}
    for raw in ApMonEncoder().encode("cl", "no", params):
        merged.update({k: v for k, (_, v) in read(raw).params.items()})
    assert merged == {
        k: float(v) if isinstance(v, int) and not -(2**31) <= v < 2**31 else v
        for k, v in params.items()
    }


@pytest.fixture
def udp_sink() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


async def test_publisher_sends_real_datagrams(udp_sink: socket.socket) -> None:
    host, port = udp_sink.getsockname()
    async with ApMonPublisher(host, port, instance_id=9) as pub:
        assert await pub.send("PoD_Masters", "42", {"NeededWorkers": 3}) == 1
        assert await pub.send("PoD_Masters", "42", {"NeededWorkers": 2}, time_s=5) == 1
    first = read(await asyncio.to_thread(udp_sink.recv, 65536))
    second = read(await asyncio.to_thread(udp_sink.recv, 65536))
    assert (first.instance_id, first.params, first.time_s) == (9, {"NeededWorkers": (2, 3)}, None)
    assert (second.seq, second.params, second.time_s) == (1, {"NeededWorkers": (2, 2)}, 5)


async def test_publisher_never_raises_on_failure() -> None:
    # Nobody listens on this port: ICMP errors come back asynchronously and are counted.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused_before = failures("udp", "ConnectionRefusedError")
    pub = ApMonPublisher("127.0.0.1", port)
    for _ in range(3):
        assert await pub.send("c", "n", {"x": 1}) == 1
        await asyncio.sleep(0.01)
    assert await pub.send("c", "n", {"x": object()}) == 0  # type: ignore[dict-item]
    await pub.close()
    assert failures("udp", "ConnectionRefusedError") > refused_before
    assert failures("udp", "bad_value") >= 1
    bad_host = ApMonPublisher("no-such-host.invalid", 8884)
    assert await bad_host.send("c", "n", {"x": 1}) == 0
    await bad_host.close()
    assert failures("udp", "open") >= 1


def failures(transport: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "podgrid_registry_client_send_failures_total", {"transport": transport, "reason": reason}
    )
    return value or 0.0


async def test_unreachable_registry_is_logged_once_but_counted_every_time() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused_before = failures("udp", "ConnectionRefusedError")
    pub = ApMonPublisher("127.0.0.1", port)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            await pub.send("c", "n", {"x": 1})
            await asyncio.sleep(0.02)
    await pub.close()
    refused = failures("udp", "ConnectionRefusedError") - refused_before
    warnings = [e for e in logs if e["event"] == "registry_client.udp_error"]
    assert refused >= 2  # every ICMP error counted...
    assert len(warnings) == 1  # ...but a down registry does not flood the log
