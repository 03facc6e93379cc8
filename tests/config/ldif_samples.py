"""LDIF variants of the embedded default for the hierarchy tests."""

from __future__ import annotations

from pathlib import Path

from podgrid.config.hierarchy import default_ldif

CE_DN = "name=local-ce,ou=CE,ou=Services,ou=Local,ou=Sites,o=podgrid"
SITE_DN = "ou=Local,ou=Sites,o=podgrid"
CONFIG_DN = "ou=Config,o=podgrid"


def default_text() -> str:
    """The embedded default LDIF."""
    return Path(default_ldif()).read_text()


def with_lines(tmp_path: Path, dn: str, *lines: str, drop: str | None = None) -> Path:
    """A copy of the default LDIF with ``lines`` appended to entry ``dn`` (``drop``: a line
    prefix removed from that entry first), written under ``tmp_path``."""
    blocks = default_text().split("\n\n")
    out = []
    for block in blocks:
        if f"\ndn: {dn}\n" in f"\n{block}\n" or block.startswith(f"dn: {dn}\n"):
            kept = [ln for ln in block.splitlines() if drop is None or not ln.startswith(drop)]
            block = "\n".join([*kept, *lines])
        out.append(block)
    path = tmp_path / "variant.ldif"
    path.write_text("\n\n".join(out).rstrip("\n") + "\n")
    return path
