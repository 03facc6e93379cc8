"""Parsing the registry's MonALISA REST answers: text/plain, text/csv and application/json.

Values may contain the separator (an attach URL holds ``/``; a string may hold ``|``), so a
row is read as the first four fields from the left and the timestamp from the right; what
is left in the middle is the value. Text and CSV carry no types: a value that reads as an
integer or a float (as the registry prints them) comes back as one, anything else as str.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from podgrid.errors import PodGridError

Format = Literal["json", "text", "csv"]
MEDIA_TYPES: Final[dict[Format, str]] = {
    "json": "application/json",
    "text": "text/plain",
    "csv": "text/csv",
}
CSV_HEADER: Final = "#Farm|Cluster|Node|Parameter|Value|Timestamp"

_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?|-?inf|nan")


class ParseError(PodGridError, ValueError):
    """A registry answer did not have the expected shape; the message names the line."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series, as the registry answers it."""

    farm: str
    cluster: str
    node: str
    parameter: str
    value: str | int | float
    timestamp_ms: int


def typed_value(text: str) -> str | int | float:
    """``"3"`` → 3, ``"0.5"`` → 0.5, anything else stays a string."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _row(line: str, sep: str, lineno: int) -> Sample:
    left = line.split(sep, 4)
    if len(left) != 5:
        raise ParseError(f"line {lineno}: expected 6 fields separated by {sep!r}: {line!r}")
    farm, cluster, node, parameter, rest = left
    value, sep_found, ts = rest.rpartition(sep)
    if not sep_found:
        raise ParseError(f"line {lineno}: expected 6 fields separated by {sep!r}: {line!r}")
    try:
        timestamp_ms = int(ts)
    except ValueError:
        raise ParseError(f"line {lineno}: timestamp {ts!r} is not an integer") from None
    return Sample(farm, cluster, node, parameter, typed_value(value), timestamp_ms)


def _lines(body: str) -> list[tuple[int, str]]:
    # Split on "\n" only: str.splitlines() would also split values holding \x1c, \u2028, ...
    lines = (line.removesuffix("\r") for line in body.split("\n"))
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def parse_text(body: str) -> list[Sample]:
    """Rows ``farm/cluster/node/parameter/value/timestamp_ms`` (the text/plain answer)."""
    return [_row(line, "/", n) for n, line in _lines(body)]


def parse_csv(body: str) -> list[Sample]:
    """A ``#`` header line, then rows ``farm|cluster|node|parameter|value|timestamp_ms``."""
    return [_row(line, "|", n) for n, line in _lines(body) if not line.startswith("#")]


def _json_results(body: str) -> list[Any]:
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise ParseError(f"answer is not JSON: {e}") from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        raise ParseError('expected a JSON object with a "results" list')
    return results


def _json_sample(item: Any, index: int) -> Sample:
    try:
        value = item["value"]
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise TypeError(f"value {value!r}")
        timestamp = item["timestamp"]
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise TypeError(f"timestamp {timestamp!r}")
        return Sample(
            farm=str(item["farm"]),
            cluster=str(item["cluster"]),
            node=str(item["node"]),
            parameter=str(item["parameter"]),
            value=value,
            timestamp_ms=timestamp,
        )
    except (KeyError, TypeError) as e:
        raise ParseError(f"results[{index}]: missing or invalid field {e}") from None


def parse_json(body: str) -> list[Sample]:
    """``{"results": [{"farm", "cluster", "node", "parameter", "value", "timestamp"}, ...]}``."""
    return [_json_sample(item, i) for i, item in enumerate(_json_results(body))]


def parse_samples(body: str, fmt: Format) -> list[Sample]:
    """Parse a value answer in the given format."""
    if fmt == "json":
        return parse_json(body)
    if fmt == "csv":
        return parse_csv(body)
    return parse_text(body)


def parse_names(body: str, fmt: Format) -> list[str]:
    """Parse a parameter-name listing (a query without a parameter) in the given format."""
    if fmt == "json":
        names = _json_results(body)
        if not all(isinstance(n, str) for n in names):
            raise ParseError("expected a list of parameter names")
        return [str(n) for n in names]
    lines = [line for _, line in _lines(body)]
    if fmt == "csv":
        lines = [line for line in lines if not line.startswith("#")]
    return lines
