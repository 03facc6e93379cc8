"""Parsing MonALISA REST paths and options into a typed Query."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podgrid.monitoring.query import Condition, QueryError, parse_query


def parse(tail: str, accept: str | None = None, **options: str):  # type: ignore[no-untyped-def]
    return parse_query(tail, options, accept, max_wait_s=60.0)


def test_last_value_query_with_alternatives() -> None:
    q = parse("*/PoD_Masters/*/Address|NeededWorkers")
    assert q.farm.match_all
    assert q.node.match_all
    assert q.cluster.literals == {"PoD_Masters"}
    assert q.param is not None
    assert q.param.literals == {"Address", "NeededWorkers"}
    assert (q.tmin_ms, q.tmax_ms, q.condition, q.fmt, q.wait_s) == (
        None,
        None,
        None,
        "text/plain",
        None,
    )
    assert q.window_ms(10_000) is None


def test_time_window_is_relative_when_negative() -> None:
    q = parse("f/c/n/-60000/-1/x")
    assert q.window_ms(1_000_000) == (940_000, 1_000_000)
    q = parse("f/c/n/5/2000000/x")
    assert q.window_ms(1_000_000) == (5, 2_000_000)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [("1:", 1.0, None), (":2.5", None, 2.5), ("-3:4", -3.0, 4.0), ("1e3:1e3", 1000.0, 1000.0)],
)
def test_conditions(text: str, low: float | None, high: float | None) -> None:
    q = parse(f"f/c/n/-60000/-1/NeededWorkers/{text}")
    assert q.condition == Condition(low, high)


def test_condition_is_inclusive_and_never_matches_strings() -> None:
    c = parse("f/c/n/x/1:3").condition
    assert c is not None
    assert [c.accepts(v) for v in (0, 1, 2.5, 3, 3.01, "2")] == [
        False,
        True,
        True,
        True,
        False,
        False,
    ]


def test_query_without_parameter_lists_names() -> None:
    assert parse("*/PoD_Masters/*").param is None


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("", "0 segment"),
        ("f/c", "2 segment"),
        ("f/c/n/a/b/c/d/e", "8 segment"),
        ("f//n/x", "cluster segment ''"),
        ("f/c/n/a||b", "parameter segment"),
        ("f/c/n/abc/-1/x", "tmin 'abc'"),
        ("f/c/n/-1/1.5/x", "tmax '1.5'"),
        ("f/c/n/-1/99999999999999999999999/x", "tmax"),
        ("f/c/n/x/1", "condition '1'"),
        ("f/c/n/x/:", "condition ':'"),
        ("f/c/n/x/a:b", "condition bound 'a'"),
        ("f/c/n/x/nan:", "condition bound 'nan'"),
        ("f/c/n/x/5:1", "lower bound above upper"),
    ],
)
def test_bad_paths_say_what_is_wrong(tail: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse(tail)


@pytest.mark.parametrize("wait", ["1e308", "-1", "nan", "abc", "inf", "", "86401"])
def test_absurd_waits_are_refused(wait: str) -> None:
    with pytest.raises(QueryError, match="wait="):
        parse("f/c/n/x", wait=wait)


def test_waits_are_capped_at_max_wait() -> None:
    assert parse("f/c/n/x", wait="2.5").wait_s == 2.5
    assert parse("f/c/n/x", wait="600").wait_s == 60.0
    assert parse("f/c/n/x", wait="0").wait_s == 0.0


def test_since_must_be_integer_ms() -> None:
    assert parse("f/c/n/x", since="1700000000000").since_ms == 1_700_000_000_000
    with pytest.raises(QueryError, match="since="):
        parse("f/c/n/x", since="yesterday")


@pytest.mark.parametrize(
    ("accept", "param", "fmt"),
    [
        (None, None, "text/plain"),
        ("application/json", None, "application/json"),
        ("text/csv;q=0.9, text/plain", None, "text/csv"),
        ("image/png, */*", None, "text/plain"),
        ("application/json", "text/csv", "text/csv"),
    ],
)
def test_format_from_accept_header_or_parameter(
    accept: str | None, param: str | None, fmt: str
) -> None:
    options = {} if param is None else {"Accept": param}
    assert parse("f/c/n/x", accept, **options).fmt == fmt


def test_unknown_accept_parameter_is_refused() -> None:
    with pytest.raises(QueryError, match="Accept='xml'"):
        parse("f/c/n/x", Accept="xml")


@given(
    tail=st.text(max_size=80),
    wait=st.none() | st.text(max_size=12),
    since=st.none() | st.text(max_size=12),
)
def test_any_input_parses_or_raises_query_error(
    tail: str, wait: str | None, since: str | None
) -> None:
    options = {k: v for k, v in (("wait", wait), ("since", since)) if v is not None}
    message = "parsed"
    try:
        parse_query(tail, options, None, 60.0)
    except QueryError as e:
        message = str(e)
    assert message
