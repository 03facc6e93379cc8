"""Answering a parsed Query from the store: last values, history windows, name listings."""

from __future__ import annotations

from podgrid.monitoring.formats import Row
from podgrid.monitoring.patterns import MATCH_ALL
from podgrid.monitoring.query import Query
from podgrid.monitoring.store import Store


def find_rows(store: Store, query: Query, now_ms: int) -> list[Row]:
    """Rows for a query with a parameter segment: last values, or history in [tmin, tmax]."""
    param = query.param or MATCH_ALL
    condition = query.condition
    window = query.window_ms(now_ms)
    rows: list[Row] = []
    for s in store.select(query.farm, query.cluster, query.node, param):
        if window is None:
            if condition is None or condition.accepts(s.value):
                rows.append((s.farm, s.cluster, s.node, s.param, s.value, s.time_ms))
            continue
        low_ms, high_ms = window
        if s.time_ms < low_ms:
            continue  # even the newest point is too old
        for t_ms, value in s.history.points():
            if low_ms <= t_ms <= high_ms and (condition is None or condition.accepts(value)):
                rows.append((s.farm, s.cluster, s.node, s.param, value, t_ms))
    return rows


def find_names(store: Store, query: Query) -> list[str]:
    """Distinct parameter names under the matching farm/cluster/node."""
    return store.param_names(query.farm, query.cluster, query.node)


def changed_since(store: Store, query: Query, since_ms: int) -> bool:
    """True when a matching series (condition included) has a value newer than ``since_ms``."""
    param = query.param or MATCH_ALL
    condition = query.condition
    return any(
        s.time_ms > since_ms and (condition is None or condition.accepts(s.value))
        for s in store.select(query.farm, query.cluster, query.node, param)
    )
