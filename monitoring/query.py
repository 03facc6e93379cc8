"""Parsing of MonALISA REST query paths and their query-string options into a typed Query.

``/rest/{farm}/{cluster}/{node}[/{tmin}/{tmax}]/{param}[/{condition}]``: ``*`` and ``|`` in
every segment, tmin/tmax in ms (negative = relative to now), conditions ``a:b``, ``a:``, ``:b``.
Options: ``Accept`` (format), ``wait`` (long-poll seconds) and ``since`` (ms).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from podgrid.errors import PodGridError
from podgrid.monitoring.formats import Format, FormatError, negotiate
from podgrid.monitoring.history import Value
from podgrid.monitoring.patterns import Pattern

MAX_WAIT_ACCEPTED_S = 86_400.0  # a longer wait is a mistake, not a wish: 400, not capped
_INT_RE = re.compile(r"-?\d{1,19}")


class QueryError(PodGridError, ValueError):
    """A query the registry cannot answer; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A numeric interval, inclusive; either end may be open. Strings never match."""

    low: float | None
    high: float | None

    def accepts(self, value: Value) -> bool:
        """True for numbers inside the interval."""
        if isinstance(value, str):
            return False
        if self.low is not None and value < self.low:
            return False
        return self.high is None or value <= self.high


@dataclass(frozen=True, slots=True)
class Query:
    """One parsed REST query: what to select, which time window, how to answer."""

    farm: Pattern
    cluster: Pattern
    node: Pattern
    param: Pattern | None  # None: list the distinct parameter names
    tmin_ms: int | None
    tmax_ms: int | None
    condition: Condition | None
    fmt: Format
    wait_s: float | None
    since_ms: int | None

    def window_ms(self, now_ms: int) -> tuple[int, int] | None:
        """The absolute [tmin, tmax] for history queries, None for the last-value view."""
        if self.tmin_ms is None or self.tmax_ms is None:
            return None
        # -1 as tmax means "up to now": a value stamped in this very millisecond (the one
        # that just woke a long-poll) must be part of the answer.
        tmax_ms = now_ms + self.tmax_ms + 1 if self.tmax_ms < 0 else self.tmax_ms
        return _absolute(self.tmin_ms, now_ms), tmax_ms

    def matches(self, farm: str, cluster: str, node: str, param: str, value: Value) -> bool:
        """True when an update of this series with this value concerns the query."""
        return (
            self.cluster.matches(cluster)
            and self.node.matches(node)
            and self.farm.matches(farm)
            and (self.param is None or self.param.matches(param))
            and (self.condition is None or self.condition.accepts(value))
        )


def _absolute(t_ms: int, now_ms: int) -> int:
    return now_ms + t_ms if t_ms < 0 else t_ms


def _pattern(text: str, what: str) -> Pattern:
    if not text or any(not alt for alt in text.split("|")):
        raise QueryError(f"{what} segment {text!r}: empty name (use * for any)")
    return Pattern.parse(text)


def _time(text: str, what: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise QueryError(f"{what} {text!r}: expected an integer in ms (negative = before now)")
    return int(text)


def _bound(text: str) -> float | None:
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise QueryError(f"condition bound {text!r}: expected a finite number")
    return number


def parse_condition(text: str) -> Condition:
    """``a:b``, ``a:`` or ``:b`` (inclusive, numeric)."""
    low_text, sep, high_text = text.partition(":")
    if not sep or (not low_text and not high_text):
        raise QueryError(f"condition {text!r}: expected a:b, a: or :b")
    low, high = _bound(low_text), _bound(high_text)
    if low is not None and high is not None and low > high:
        raise QueryError(f"condition {text!r}: lower bound above upper bound")
    return Condition(low, high)


def parse_wait(text: str, max_wait_s: float) -> float:
    """Seconds to hold a long-poll, capped at ``max_wait_s``; nonsense raises QueryError."""
    try:
        wait_s = float(text)
    except ValueError:
        wait_s = math.nan
    if not (0 <= wait_s <= MAX_WAIT_ACCEPTED_S):
        raise QueryError(
            f"wait={text!r}: expected seconds between 0 and {MAX_WAIT_ACCEPTED_S:g}"
            f" (longer waits are capped at {max_wait_s:g})"
        )
    return min(wait_s, max_wait_s)


def _options(
    options: Mapping[str, str], accept: str | None, max_wait_s: float
) -> tuple[Format, float | None, int | None]:
    try:
        fmt = negotiate(options.get("Accept"), accept)
    except FormatError as e:
        raise QueryError(str(e)) from e
    wait_s = parse_wait(options["wait"], max_wait_s) if "wait" in options else None
    since_ms = None
    if "since" in options:
        if not _INT_RE.fullmatch(options["since"]):
            raise QueryError(f"since={options['since']!r}: expected a timestamp in ms")
        since_ms = int(options["since"])
    return fmt, wait_s, since_ms


def parse_query(
    tail: str, options: Mapping[str, str], accept: str | None, max_wait_s: float
) -> Query:
    """Parse the path after ``/rest/`` plus the query-string options."""
    segments = tail.strip("/").split("/") if tail.strip("/") else []
    n = len(segments)
    if n not in (3, 4, 5, 6, 7):
        raise QueryError(
            f"path has {n} segment(s): expected "
            "{farm}/{cluster}/{node}[/{tmin}/{tmax}]/{param}[/{condition}]"
        )
    farm = _pattern(segments[0], "farm")
    cluster = _pattern(segments[1], "cluster")
    node = _pattern(segments[2], "node")
    tmin_ms = tmax_ms = None
    rest = segments[3:]
    if n >= 6:
        tmin_ms, tmax_ms = _time(rest[0], "tmin"), _time(rest[1], "tmax")
        rest = rest[2:]
    param = _pattern(rest[0], "parameter") if rest else None
    condition = parse_condition(rest[1]) if len(rest) > 1 else None
    fmt, wait_s, since_ms = _options(options, accept, max_wait_s)
    return Query(farm, cluster, node, param, tmin_ms, tmax_ms, condition, fmt, wait_s, since_ms)
