"""Fuzzing the ApMon protocol handler: no datagram gets out as an exception; all are counted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from podgrid.monitoring.apmon import REASONS
from podgrid.monitoring.ingest import ApMonProtocol, Ingestor
from podgrid.monitoring.longpoll import LongPollHub
from podgrid.monitoring.metrics import RegistryMetrics
from podgrid.monitoring.store import Store
from tests.monitoring.xdr_encoder import FLOAT32, INT32, STRING, encode

VALID = [
    encode("PoD_Masters", "42", {"Address": "http://127.0.0.1:9000", "NeededWorkers": 3}),
    encode(
        "PoD_Agents_CERN",
        "a1",
        [("State", STRING, "POLLING"), ("TTL", INT32, 3600)],
        time_s=1_700_000_000,
    ),
    encode("c", "n", [("x", FLOAT32, 1.5)], password="pw"),
]
KNOWN_REASONS = {*REASONS, "replay", "bad_password"}


def make_handler(password: str | None = None) -> tuple[ApMonProtocol, CollectorRegistry]:
    store = Store(history_points=5, series_ttl_s=60, max_series=50)
    metrics = RegistryMetrics()
    hub = LongPollHub(10)
    metrics.watch(store, lambda: hub.waiting, 10)
    ingestor = Ingestor(farm="f", store=store, hub=hub, metrics=metrics, apmon_password=password)
    return ApMonProtocol(ingestor), metrics.registry


def counts(registry: CollectorRegistry) -> tuple[float, dict[str, float]]:
    received = registry.get_sample_value("podgrid_registry_datagrams_received_total") or 0.0
    dropped: dict[str, float] = {}
    for family in registry.collect():
        if family.name == "podgrid_registry_datagrams_dropped":
            for s in family.samples:
                if s.name.endswith("_total"):
                    dropped[s.labels["reason"]] = s.value
    return received, dropped


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set_int"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        elif op == "set_int" and len(data) >= pos + 4:
            data[pos : pos + 4] = draw(st.integers(-(2**31), 2**31 - 1)).to_bytes(
                4, "big", signed=True
            )
    return bytes(data)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200) | mutated(), min_size=1, max_size=20))
def test_fuzzed_datagrams_never_raise_and_are_all_counted(datagrams: list[bytes]) -> None:
    handler, registry = make_handler(password="pw")
    for data in datagrams:
        handler.datagram_received(data, ("127.0.0.1", 9))
    received, dropped = counts(registry)
    assert received == len(datagrams)
    assert set(dropped) <= KNOWN_REASONS  # "internal" would mean an exception escaped
    assert sum(dropped.values()) <= received
    # the handler still works after whatever came before
    handler.datagram_received(encode("ok", "n", {"x": 1}, password="pw", instance_id=777), ("h", 1))
    assert counts(registry)[1] == dropped


def test_unexpected_failures_are_contained_and_counted() -> None:
    handler, registry = make_handler()
    handler.ingestor.store.put = None  # type: ignore[assignment,method-assign]
    handler.datagram_received(VALID[0], ("127.0.0.1", 9))
    assert counts(registry)[1] == {"internal": 1.0}
