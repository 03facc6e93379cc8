"""The three MonALISA answer formats: text/plain (default), text/csv and application/json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from podgrid.errors import PodGridError
from podgrid.monitoring.history import Value

Format = Literal["text/plain", "text/csv", "application/json"]
FORMATS: tuple[Format, ...] = ("text/plain", "text/csv", "application/json")
DEFAULT_FORMAT: Format = "text/plain"
CSV_HEADER = "#Farm|Cluster|Node|Parameter|Value|Timestamp"

# farm, cluster, node, parameter, value, timestamp ms
Row = tuple[str, str, str, str, Value, int]


class FormatError(PodGridError, ValueError):
    """An ``?Accept=`` value that names no supported format."""


def negotiate(accept_param: str | None, accept_header: str | None) -> Format:
    """``?Accept=`` wins (and must be valid); else the first supported type in the header."""
    if accept_param is not None:
        wanted = accept_param.split(";")[0].strip().lower()
        for fmt in FORMATS:
            if wanted == fmt:
                return fmt
        raise FormatError(f"Accept={accept_param!r}: expected one of {', '.join(FORMATS)}")
    for part in (accept_header or "").split(","):
        wanted = part.split(";")[0].strip().lower()
        for fmt in FORMATS:
            if wanted == fmt:
                return fmt
    return DEFAULT_FORMAT


def _text(value: Value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def render_rows(rows: Sequence[Row], fmt: Format) -> str:
    """Rows of values in the chosen format."""
    if fmt == "application/json":
        results = [
            {"farm": f, "cluster": c, "node": n, "parameter": p, "value": v, "timestamp": t}
            for f, c, n, p, v, t in rows
        ]
        return json.dumps({"results": results}, allow_nan=False, separators=(",", ":"))
    if fmt == "text/csv":
        lines = [CSV_HEADER]
        lines += [f"{f}|{c}|{n}|{p}|{_text(v)}|{t}" for f, c, n, p, v, t in rows]
    else:
        lines = [f"{f}/{c}/{n}/{p}/{_text(v)}/{t}" for f, c, n, p, v, t in rows]
    return "".join(line + "\n" for line in lines)


def render_names(names: Sequence[str], fmt: Format) -> str:
    """A parameter-name listing in the chosen format."""
    if fmt == "application/json":
        return json.dumps({"results": list(names)}, separators=(",", ":"))
    lines = ["#Parameter", *names] if fmt == "text/csv" else list(names)
    return "".join(line + "\n" for line in lines)
