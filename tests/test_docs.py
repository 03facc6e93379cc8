"""The README and docs/ point only inside the repository: a user's clone has nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])

# [text](target) and [text](target "title"), images too; [label]: target reference definitions.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def _links(text: str) -> list[str]:
    prose = _FENCE.sub("", text)
    return _INLINE.findall(prose) + _REFERENCE.findall(prose)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", markdown), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_docs_exist() -> None:
    assert REPO / "docs" / "design.md" in DOCS


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_mention_of_the_shared_folder(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text
    assert "shared/DESIGN.md" not in text


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_exist_in_the_repository(doc: Path) -> None:
    broken = []
    for target in _links(doc.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            broken.append(f"{target}: not a file of the repository")
        elif (
            fragment
            and resolved.suffix == ".md"
            and fragment not in _anchors(resolved.read_text(encoding="utf-8"))
        ):
            broken.append(f"{target}: no heading #{fragment} in {path_part or doc.name}")
    assert not broken, broken


def test_the_link_checker_sees_links() -> None:
    text = "[a](docs/design.md) [b](../shared/DESIGN.md#x) [c](https://x.org)\n[d]: ./nowhere.md\n"
    assert _links(text) == [
        "docs/design.md",
        "../shared/DESIGN.md#x",
        "https://x.org",
        "./nowhere.md",
    ]
    assert "the-python-api" in _anchors("## The Python API\n")
