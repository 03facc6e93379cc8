"""The small "directory" interface the resolver reads: one entry by its path under the base DN.

Two implementations answer it, :class:`podgrid.config.ldap_source.LdapDirectory` (a live server read
with ldap3) and :class:`podgrid.config.ldif_source.LdifDirectory` (an LDIF file), so the resolution
and validation logic exists once, in :mod:`podgrid.config.hierarchy`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from ldap3.utils.dn import escape_rdn

# One step below the base DN: (RDN attribute, unescaped RDN value), e.g. ("ou", "Sites").
Step = tuple[str, str]
Path = Sequence[Step]


@dataclass(frozen=True)
class Entry:
    """One directory entry: its DN and its attribute values keyed by lower-case name."""

    dn: str
    attributes: Mapping[str, Sequence[object]] = field(default_factory=dict)


class Directory(Protocol):
    """What the resolver needs from a configuration source."""

    source: str
    base_dn: str

    def lookup(self, path: Path) -> Entry | None:
        """The entry at ``path`` below the base DN, or None if there is none."""
        ...


def escape_dn_value(value: str) -> str:
    """An RDN value escaped per RFC 4514 (ldap3's escape_rdn, but NUL as ``\\00``)."""
    # escape_rdn writes NUL as backslash + NUL, which slapd rejects as invalidDNSyntax.
    return str(escape_rdn(value)).replace("\\\x00", "\\00")


def path_dn(path: Path, base_dn: str) -> str:
    """The DN of ``path`` below ``base_dn``, every user-controlled value RDN-escaped."""
    rdns = [f"{attr}={escape_dn_value(value)}" for attr, value in reversed(path)]
    return ",".join([*rdns, base_dn])


def open_directory(source: str | os.PathLike[str]) -> AbstractContextManager[Directory]:
    """Open ``source``: an ``ldap://host:port/<base DN>`` (or ``ldaps://``) URL or an LDIF path."""
    from podgrid.config.ldap_source import LdapDirectory
    from podgrid.config.ldif_source import LdifDirectory

    text = os.fspath(source)
    if text.startswith(("ldap://", "ldaps://")):
        return LdapDirectory(text)
    return LdifDirectory(text)
