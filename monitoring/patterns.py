"""MonALISA segment patterns: ``*`` wildcard, ``|`` alternatives, ``*`` globs inside a name."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One path segment: literal alternatives are looked up, globs are matched."""

    text: str
    match_all: bool
    literals: frozenset[str]
    ordered: tuple[str, ...]  # the literals, sorted, for a stable answer order
    glob: re.Pattern[str] | None

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Build a pattern from a segment such as ``*``, ``Address|NeededWorkers`` or ``PoD_*``."""
        alternatives = text.split("|")
        if "*" in alternatives:
            return cls(text, True, frozenset(), (), None)
        literals = frozenset(a for a in alternatives if "*" not in a)
        globs = [a for a in alternatives if "*" in a]
        regex = None
        if globs:
            body = "|".join(".*".join(re.escape(p) for p in g.split("*")) for g in globs)
            regex = re.compile(f"(?:{body})", re.DOTALL)
        return cls(text, False, literals, tuple(sorted(literals)), regex)

    def matches(self, name: str) -> bool:
        """True when ``name`` is selected by this segment."""
        if self.match_all or name in self.literals:
            return True
        return self.glob is not None and self.glob.fullmatch(name) is not None

    def select(self, table: Mapping[str, T]) -> Iterator[T]:
        """The values of ``table`` whose keys match, without scanning it for plain literals."""
        if self.match_all:
            yield from table.values()
            return
        if self.glob is None:
            for name in self.ordered:
                item = table.get(name)
                if item is not None:
                    yield item
            return
        for name, item in table.items():
            if self.matches(name):
                yield item


MATCH_ALL = Pattern.parse("*")
