"""The ROOT files an analysis reads: the CMS sample that ships with PoD Grid, or a user's own.

:func:`find_sources` turns ``--file`` patterns (globs allowed), a tree and a branch into
:class:`Source` records after opening every file with uproot, so a missing file, tree or
branch is one :class:`DataError` on the user's machine, before any cluster is requested.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from podgrid.errors import PodGridError

SAMPLE_FILE: Final = "uproot-Zmumu.root"  # 2,304 CMS dimuon events (examples/data/README.md)
SAMPLE_TREE: Final = "events"
SAMPLE_BRANCH: Final = "M"  # the dimuon invariant mass, GeV
SAMPLE_UNIT: Final = "GeV"
ROOT_MAGIC: Final = b"root"  # the first four bytes of every ROOT file
MAX_NAMES_SHOWN: Final = 25  # trees or branches listed in an error message
_GLOB_CHARS: Final = frozenset("*?[")


class DataError(PodGridError, ValueError):
    """A file, tree or branch the analysis was asked for is not there or holds no numbers."""


@dataclass(frozen=True, slots=True)
class Source:
    """One file's branch to histogram: ``entries`` entries of ``tree``, absolute ``path``."""

    path: str
    tree: str
    branch: str
    entries: int
    jagged: bool = False  # several values per entry (NanoAOD's Muon_pt): all are filled

    @property
    def name(self) -> str:
        """The file's name, for messages."""
        return Path(self.path).name


def sample_file() -> Path:
    """The packaged Z→μμ file (``podgrid/data`` links to ``examples/data``; in the wheel too)."""
    return Path(__file__).with_name("data") / SAMPLE_FILE


def expand(patterns: Sequence[str]) -> list[Path]:
    """Every file the patterns name, in order, each once; ``DataError`` for one that names none."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        expanded = str(Path(pattern).expanduser())
        if _GLOB_CHARS.intersection(pattern):
            matches = sorted(Path(m) for m in glob.glob(expanded, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise DataError(f"--file {pattern!r}: no file matches this pattern")
        else:
            path = Path(expanded)
            if not path.exists():
                raise DataError(f"--file {pattern!r}: no such file")
            if not path.is_file():
                raise DataError(f"--file {pattern!r}: not a file")
            files = [path]
        found.update(dict.fromkeys(f.resolve() for f in files))
    return list(found)


def find_sources(patterns: Sequence[str], tree: str, branch: str) -> list[Source]:
    """Open each file the patterns name and check its ``tree`` and ``branch`` (``DataError``).

    At least one entry in all must be there, or there is nothing to histogram.
    """
    if not patterns:
        raise DataError("--file: no file given")
    sources = [inspect_file(path, tree, branch) for path in expand(patterns)]
    if sum(s.entries for s in sources) == 0:
        names = ", ".join(s.name for s in sources)
        raise DataError(f"tree {tree!r} has no entries in {names}: nothing to histogram")
    return sources


def sample_sources() -> list[Source]:
    """The packaged sample as the analysis reads it (``M`` of tree ``events``)."""
    return find_sources([str(sample_file())], SAMPLE_TREE, SAMPLE_BRANCH)


def inspect_file(path: Path, tree: str, branch: str) -> Source:
    """``path``'s ``tree`` and ``branch`` as a :class:`Source`; ``DataError`` naming what is not."""
    import uproot

    try:
        with path.open("rb") as raw:
            magic = raw.read(len(ROOT_MAGIC))
        if magic != ROOT_MAGIC:
            raise DataError(f"{path}: not a ROOT file (it does not begin with {ROOT_MAGIC!r})")
        file = uproot.open(path)
    except OSError as e:
        raise DataError(f"{path}: not a readable ROOT file ({_first_line(e)})") from e
    with file:
        trees = sorted(k.split(";")[0] for k, c in file.classnames().items() if c == "TTree")
        if tree not in trees:
            raise DataError(f"{path}: no tree {tree!r} (trees in the file: {_names(trees)})")
        ttree = file[tree]
        if branch not in ttree.keys(recursive=True):
            branches = ttree.keys(recursive=True)
            raise DataError(
                f"{path}: tree {tree!r} has no branch {branch!r} (branches: {_names(branches)})"
            )
        jagged = _is_jagged_number(ttree[branch].interpretation, f"{path}: branch {branch!r}")
        return Source(str(path), tree, branch, int(ttree.num_entries), jagged)


def _is_jagged_number(interpretation: Any, what: str) -> bool:
    """False for numbers (one or a fixed array per entry), True for jagged ones; else DataError."""
    from uproot.interpretation.jagged import AsJagged
    from uproot.interpretation.numerical import AsDtype

    jagged = isinstance(interpretation, AsJagged)
    content = interpretation.content if jagged else interpretation
    if isinstance(content, AsDtype) and content.to_dtype.kind in "biuf":
        return jagged
    raise DataError(f"{what} holds {interpretation}, not numbers to histogram")


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_SHOWN]) or "none"
    more = len(names) - MAX_NAMES_SHOWN
    return f"{shown}, and {more} more" if more > 0 else shown


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(",")
