"""Parsing the registry's three answer formats, on fixed text (no server)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podgrid.monitoring.client import rest_path
from podgrid.monitoring.rest_parse import (
    CSV_HEADER,
    ParseError,
    Sample,
    parse_csv,
    parse_json,
    parse_names,
    parse_samples,
    parse_text,
    typed_value,
)

ADDRESS = Sample("podgrid", "PoD_Masters", "42", "Address", "http://127.0.0.1:9000", 1700000000123)
NEEDED = Sample("podgrid", "PoD_Masters", "42", "NeededWorkers", 3, 1700000000123)
LOAD = Sample("podgrid", "PoD_Agents_CERN", "a-1", "Load", 0.5, 1700000000999)
PIPE = Sample("podgrid", "PoD_Masters", "42", "Requirements", '{"sites":["A|B"]}', 17)

TEXT = """podgrid/PoD_Masters/42/Address/http://127.0.0.1:9000/1700000000123
podgrid/PoD_Masters/42/NeededWorkers/3/1700000000123
podgrid/PoD_Agents_CERN/a-1/Load/0.5/1700000000999
podgrid/PoD_Masters/42/Requirements/{"sites":["A|B"]}/17
"""

CSV = f"""{CSV_HEADER}
podgrid|PoD_Masters|42|Address|http://127.0.0.1:9000|1700000000123
podgrid|PoD_Masters|42|NeededWorkers|3|1700000000123
podgrid|PoD_Agents_CERN|a-1|Load|0.5|1700000000999
podgrid|PoD_Masters|42|Requirements|{{"sites":["A|B"]}}|17
"""


def as_json(samples: list[Sample]) -> str:
    return json.dumps(
        {
            "results": [
                {
                    "farm": s.farm,
                    "cluster": s.cluster,
                    "node": s.node,
                    "parameter": s.parameter,
                    "value": s.value,
                    "timestamp": s.timestamp_ms,
                }
                for s in samples
            ]
        }
    )


def test_text_values_keep_slashes_and_get_their_types() -> None:
    assert parse_text(TEXT) == [ADDRESS, NEEDED, LOAD, PIPE]


def test_csv_skips_header_and_keeps_pipes_in_values() -> None:
    assert parse_csv(CSV) == [ADDRESS, NEEDED, LOAD, PIPE]


def test_json_keeps_types() -> None:
    samples = [ADDRESS, NEEDED, LOAD, PIPE]
    assert parse_json(as_json(samples)) == samples
    assert parse_json('{"results": []}') == []


def test_the_three_formats_agree() -> None:
    samples = [ADDRESS, NEEDED, LOAD, PIPE]
    answers = {"text": TEXT, "csv": CSV, "json": as_json(samples)}
    for fmt, body in answers.items():
        assert parse_samples(body, fmt) == samples  # type: ignore[arg-type]


def test_empty_answers() -> None:
    assert parse_text("") == []
    assert parse_csv(CSV_HEADER + "\n") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("podgrid/PoD_Masters/42/NeededWorkers/3", "line 1: expected 6 fields"),
        ("podgrid/a/b/c/3/12\npodgrid/PoD_Masters/42", "line 2: expected 6 fields"),
        ("podgrid/a/b/c/3/x\n", "line 1: timestamp 'x' is not an integer"),
    ],
)
def test_bad_text_names_the_line(body: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_text(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not JSON"),
        ('{"rows": []}', '"results" list'),
        ('{"results": [{"farm": "f"}]}', r"results\[0\]: missing or invalid field 'value'"),
        (
            '{"results": [{"farm":"f","cluster":"c","node":"n","parameter":"p",'
            '"value":1,"timestamp":"now"}]}',
            "timestamp 'now'",
        ),
    ],
)
def test_bad_json_is_a_parse_error(body: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_json(body)


def test_parameter_listings_in_all_formats() -> None:
    names = ["Address", "NeededWorkers", "State"]
    assert parse_names("Address\nNeededWorkers\nState\n", "text") == names
    assert parse_names("#Parameter\nAddress\nNeededWorkers\nState\n", "csv") == names
    assert parse_names(json.dumps({"results": names}), "json") == names


def test_rest_path_segments() -> None:
    assert rest_path(
        "PoD_Masters", "NeededWorkers", tmin_ms=-60000, tmax_ms=-1, condition="1:"
    ) == [
        "*",
        "PoD_Masters",
        "*",
        "-60000",
        "-1",
        "NeededWorkers",
        "1:",
    ]
    assert rest_path("PoD_Agents_*", None, node="a-1") == ["*", "PoD_Agents_*", "a-1"]
    with pytest.raises(ValueError, match="both"):
        rest_path("c", "p", tmin_ms=-1)


segment = st.text(
    st.characters(blacklist_characters="/|#\n\r", blacklist_categories=["Cs"]), min_size=1
)
value = st.one_of(
    st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"])),
    st.integers(),
    st.floats(allow_nan=False),
)
Row = tuple[str, str, str, str, str | int | float, int]


@given(st.lists(st.tuples(segment, segment, segment, segment, value, st.integers(0, 2**62))))
def test_text_and_csv_round_trip_whatever_the_value(rows: list[Row]) -> None:
    for sep, parse in (("/", parse_text), ("|", parse_csv)):
        body = "\n".join(sep.join(map(str, r)) for r in rows)
        parsed = parse(body)
        assert [(s.farm, s.cluster, s.node, s.parameter, s.timestamp_ms) for s in parsed] == [
            (*r[:4], r[5]) for r in rows
        ]
        # Numbers come back as numbers; strings come back as themselves unless they look numeric.
        assert [s.value for s in parsed] == [
            r[4] if not isinstance(r[4], str) else typed_value(r[4]) for r in rows
        ]
