"""The series store: last values, history ring, TTL, series cap, stale values, index."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from podgrid.monitoring.patterns import MATCH_ALL, Pattern
from podgrid.monitoring.store import Store


class Clock:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def make_store(clock: Clock, **kw: int | float) -> Store:
    args: dict[str, int | float] = {"history_points": 60, "series_ttl_s": 10, "max_series": 1000}
    args.update(kw)
    return Store(
        history_points=int(args["history_points"]),
        series_ttl_s=args["series_ttl_s"],
        max_series=int(args["max_series"]),
        clock_ms=clock,
    )


def select(store: Store, cluster: str = "*", param: str = "*") -> list[tuple[str, object, int]]:
    series = store.select(MATCH_ALL, Pattern.parse(cluster), MATCH_ALL, Pattern.parse(param))
    return sorted((f"{s.cluster}/{s.node}/{s.param}", s.value, s.time_ms) for s in series)


def test_last_value_keeps_type_and_receive_time() -> None:
    clock = Clock()
    store = make_store(clock)
    store.put("f", "PoD_Masters", "42", [("Address", "http://h:1/x"), ("NeededWorkers", 3)])
    store.put("f", "PoD_Masters", "42", [("Load", 0.25)], time_ms=5)
    assert select(store) == [
        ("PoD_Masters/42/Address", "http://h:1/x", 1_000_000),
        ("PoD_Masters/42/Load", 0.25, 5),
        ("PoD_Masters/42/NeededWorkers", 3, 1_000_000),
    ]
    assert len(store) == 3


def test_history_ring_is_bounded_and_ordered_with_types_kept() -> None:
    clock = Clock()
    store = make_store(clock, history_points=5)
    for i in range(12):
        store.put("f", "c", "n", [("x", i if i % 2 else float(i) + 0.5)], time_ms=100 + i)
    (series,) = store.select(MATCH_ALL, MATCH_ALL, MATCH_ALL, MATCH_ALL)
    points = list(series.history.points())
    assert points == [(107, 7), (108, 8.5), (109, 9), (110, 10.5), (111, 11)]
    assert [type(v) for _, v in points] == [int, float, int, float, int]
    # a string arriving switches the ring's storage without losing what it held
    store.put("f", "c", "n", [("x", "DONE")], time_ms=200)
    assert list(series.history.points()) == [
        (108, 8.5),
        (109, 9),
        (110, 10.5),
        (111, 11),
        (200, "DONE"),
    ]
    store.put("f", "c", "n", [("x", 2**60)], time_ms=201)
    assert list(series.history.points())[-1] == (201, 2**60)


def test_older_value_never_replaces_a_newer_one() -> None:
    store = make_store(Clock())
    store.put("f", "c", "n", [("x", 2)], time_ms=2000)
    result = store.put("f", "c", "n", [("x", 1)], time_ms=1000)
    assert (result.accepted, result.stale, store.stale_total) == (0, 1, 1)
    store.put("f", "c", "n", [("x", 3)], time_ms=2000)  # same stamp: the later send wins
    assert select(store) == [("c/n/x", 3, 2000)]
    (series,) = store.select(MATCH_ALL, MATCH_ALL, MATCH_ALL, MATCH_ALL)
    assert [v for _, v in series.history.points()] == [2, 3]


def test_series_past_ttl_leave_the_view_and_are_swept() -> None:
    clock = Clock()
    store = make_store(clock, series_ttl_s=10)
    store.put("f", "old", "n", [("x", 1)])
    clock.now_ms += 6000
    store.put("f", "new", "n", [("x", 1)])
    clock.now_ms += 5000
    assert select(store) == [("new/n/x", 1, 1_006_000)]
    assert len(store) == 2
    assert store.sweep() == 1
    assert len(store) == 1
    assert store.param_names(MATCH_ALL, Pattern.parse("old"), MATCH_ALL) == []


def test_series_cap_refuses_new_series_until_old_ones_expire() -> None:
    clock = Clock()
    store = make_store(clock, max_series=3, series_ttl_s=1)
    result = store.put("f", "c", "n", [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])
    assert (result.accepted, result.refused, store.refused_total) == (3, 2, 2)
    assert store.put("f", "c", "n", [("a", 9)]).accepted == 1  # existing series still update
    assert store.put("f", "other", "n", [("z", 1)]).refused == 1
    assert select(store, cluster="other") == []
    clock.now_ms += 2000  # everything expired: an on-demand sweep makes room
    assert store.put("f", "other", "n", [("z", 1)]).accepted == 1
    assert len(store) == 1


class NoScan(dict[str, object]):
    """A table that fails the test if anyone iterates it."""

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("scanned every key")

    def items(self):  # type: ignore[no-untyped-def]
        raise AssertionError("scanned every item")

    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("scanned every value")


def test_literal_segments_look_up_instead_of_scanning() -> None:
    table = NoScan({f"PoD_Agents_site{i}": i for i in range(1000)})
    assert list(Pattern.parse("PoD_Agents_site7|PoD_Agents_site9|nope").select(table)) == [7, 9]
    with pytest.raises(AssertionError, match="scanned"):
        list(Pattern.parse("PoD_Agents_*").select(table))


def test_globs_and_alternatives_select_the_right_clusters() -> None:
    store = make_store(Clock())
    for cluster in ("PoD_Agents_CERN", "PoD_Agents_GSI", "PoD_Masters", "Other"):
        store.put("f", cluster, "n", [("State", "POLLING")])
    assert [r[0] for r in select(store, cluster="PoD_Agents_*|Other")] == [
        "Other/n/State",
        "PoD_Agents_CERN/n/State",
        "PoD_Agents_GSI/n/State",
    ]
    assert [r[0] for r in select(store, cluster="*_GSI")] == ["PoD_Agents_GSI/n/State"]


def test_memory_per_live_series_with_full_history_is_under_2_kib() -> None:
    clock = Clock()
    store = make_store(clock, history_points=60, max_series=100_000)
    n_nodes = 500  # 4 series each: a string, an int, a changing float, a repeated string
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for step in range(60):
        clock.now_ms += 1000
        for node in range(n_nodes):
            store.put(
                "podgrid",
                "PoD_Masters",
                str(node),
                [
                    ("Address", f"tls://10.0.{node // 256}.{node % 256}:8786"),
                    ("NeededWorkers", step % 7),
                    ("Load", step * 0.37 + node),
                    ("State", "PUBLISHING"),
                ],
            )
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_series = used / len(store)
    print(f"memory per live series with 60 points: {per_series:.0f} bytes")
    assert len(store) == 4 * n_nodes
    assert per_series < 2048
