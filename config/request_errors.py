"""The one error type of the server-request parsers (TOML, JDL, JSON).

Each problem is a :class:`RequestIssue` naming the source, the line (and the column for
syntax errors), the field as the user spelled it, and what is wrong. A :class:`RequestError`
carries one or more issues; its own ``source``/``line``/``column``/``field``/``problem`` are the
first issue's, and ``str()`` renders every issue on its own line, e.g.
``request.toml:3: server.max_workers: must be >= min_workers (4), got 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from podgrid.errors import PodGridError


@dataclass(frozen=True)
class RequestIssue:
    """One problem in a request file; ``line``/``column`` are 1-based, ``None`` when unknown."""

    source: str
    problem: str
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        what = f"{self.field}: " if self.field else ""
        return f"{where}: {what}{self.problem}"

    def to_dict(self) -> dict[str, Any]:
        """The issue as a JSON-ready dict (source, line, column, field, problem)."""
        return asdict(self)


class RequestError(PodGridError):
    """A request that cannot be read or is invalid; carries every issue found."""

    def __init__(self, issues: Sequence[RequestIssue]) -> None:
        if not issues:
            raise ValueError("RequestError needs at least one issue")
        self.issues: tuple[RequestIssue, ...] = tuple(issues)
        first = self.issues[0]
        self.source = first.source
        self.line = first.line
        self.column = first.column
        self.field = first.field
        self.problem = first.problem
        super().__init__(str(self))

    @classmethod
    def single(
        cls,
        source: str,
        problem: str,
        *,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> RequestError:
        """An error holding exactly one issue."""
        return cls([RequestIssue(source, problem, line, column, field)])

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)

    def to_dict(self) -> dict[str, Any]:
        """The first issue's fields at top level plus ``errors``: every issue (for ``--json``)."""
        return {**self.issues[0].to_dict(), "errors": [i.to_dict() for i in self.issues]}
