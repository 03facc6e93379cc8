"""An LDIF file as a configuration source (the embedded default), parsed with ``ldif``."""

from __future__ import annotations

import re
from types import TracebackType
from typing import Self

import ldif
from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from podgrid.config.directory import Entry, Path
from podgrid.config.errors import ConfigSourceError

_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)")

DnKey = tuple[tuple[str, str], ...]


def _unescape(value: str) -> str:
    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        return chr(int(s, 16)) if len(s) == 2 else s

    return _ESCAPE.sub(one, value)


def dn_key(dn: str) -> DnKey:
    """A DN as comparable (attribute, value) pairs: case-insensitive, escapes resolved."""
    return tuple(
        (attr.strip().lower(), _unescape(value.strip()).lower()) for attr, value, _ in parse_dn(dn)
    )


class LdifDirectory:
    """Every entry of one LDIF file, looked up by DN; the base DN is the parent of ou=Config."""

    def __init__(self, path: str) -> None:
        self.source = path
        self._entries = _read(path)
        self.base_dn = _base_dn(path, self._entries)
        self._base_key = dn_key(self.base_dn)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def lookup(self, path: Path) -> Entry | None:
        """The entry at ``path`` below the base DN, or None."""
        # Compared as (attribute, value) pairs, never as text: nothing in a name can inject.
        steps = tuple((attr.lower(), value.strip().lower()) for attr, value in reversed(path))
        return self._entries.get(steps + self._base_key)


def _read(path: str) -> dict[DnKey, Entry]:
    try:
        with open(path, "rb") as f:
            records = list(ldif.LDIFParser(f, strict=True).parse())
    except OSError as e:
        raise ConfigSourceError(path, e.strerror or str(e)) from e
    except (ValueError, UnicodeError) as e:
        raise ConfigSourceError(path, f"not valid LDIF: {e}") from e
    entries: dict[DnKey, Entry] = {}
    for dn, attrs in records:
        if dn is None:
            continue
        try:
            key = dn_key(dn)
        except LDAPInvalidDnError as e:
            raise ConfigSourceError(path, f"not a valid DN: {dn!r}") from e
        values = {name.lower(): list(v) for name, v in attrs.items()}
        entries[key] = Entry(dn=dn, attributes=values)
    if not entries:
        raise ConfigSourceError(path, "no LDIF entries in the file")
    return entries


def _base_dn(path: str, entries: dict[DnKey, Entry]) -> str:
    for key, entry in entries.items():
        if key[0] == ("ou", "config") and len(key) > 1:
            return entry.dn.split(",", 1)[1].strip()
    raise ConfigSourceError(path, "no ou=Config entry (the grid-wide defaults) in the file")
