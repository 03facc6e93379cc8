"""A live LDAP server as a configuration source, read anonymously with ldap3 (blocking)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from podgrid.config.directory import Entry, Path, path_dn
from podgrid.config.errors import ConfigSourceError

DEFAULT_TIMEOUT_S = 5  # seconds, for connecting and for each answer (ldap3 needs an int)


class LdapDirectory:
    """One anonymous, read-only ldap3 connection to ``ldap[s]://host:port/<base DN>``."""

    def __init__(self, url: str, *, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        self.source = url
        parts = urlsplit(url)
        self.base_dn = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not self.base_dn:
            raise ConfigSourceError(url, "expected ldap://host:port/<base DN>")
        try:
            port = parts.port
        except ValueError as e:
            raise ConfigSourceError(url, "the port is not a number in 1-65535") from e
        self._server = ldap3.Server(
            parts.hostname,
            port=port,
            use_ssl=parts.scheme == "ldaps",
            get_info=ldap3.SCHEMA,
            connect_timeout=timeout_s,
        )
        self._timeout_s = timeout_s
        self._conn: Any = None

    def __enter__(self) -> Self:
        conn = ldap3.Connection(
            self._server,
            read_only=True,
            receive_timeout=self._timeout_s,
            raise_exceptions=False,
        )
        try:
            conn.open(read_server_info=True)
            conn.bind()
        except LDAPException as e:
            # ldap3 leaves a failed socket open; close it instead of leaking it to the GC.
            if conn.socket is not None:
                conn.socket.close()
            raise self._unreachable(e) from e
        self._conn = conn
        try:
            if not self._search(self.base_dn, ldap3.BASE, "(objectClass=*)"):
                raise ConfigSourceError(self.source, f"the base DN {self.base_dn!r} does not exist")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            self._conn.unbind()
            self._conn = None

    def lookup(self, path: Path) -> Entry | None:
        """Search one level below the parent of ``path`` with an escaped equality filter."""
        attr, value = path[-1]
        parent = path_dn(path[:-1], self.base_dn)
        found = self._search(parent, ldap3.LEVEL, f"({attr}={escape_filter_chars(value)})")
        # ``name`` is a super-type of ou/cn/...: keep only entries whose RDN is ``attr=``.
        for dn, attributes in found:
            if parse_dn(dn)[0][0].lower() == attr.lower():
                return Entry(dn=dn, attributes=attributes)
        return None

    def _search(
        self, base: str, scope: str, search_filter: str
    ) -> list[tuple[str, dict[str, list[object]]]]:
        try:
            self._conn.search(
                base, search_filter, search_scope=scope, attributes=ldap3.ALL_ATTRIBUTES
            )
        except LDAPException as e:
            raise ConfigSourceError(
                self.source, str(e) or type(e).__name__, unreachable=True
            ) from e
        result = self._conn.result
        if result["result"] == 32:  # noSuchObject: the parent does not exist either
            return []
        if result["result"] != 0:
            raise ConfigSourceError(self.source, f"search of {base!r}: {result['description']}")
        return [
            (item["dn"], {k.lower(): _as_list(v) for k, v in item["attributes"].items()})
            for item in self._conn.response
            if item.get("type") == "searchResEntry"
        ]

    def _unreachable(self, error: LDAPException) -> ConfigSourceError:
        return ConfigSourceError(self.source, str(error) or type(error).__name__, unreachable=True)


def _as_list(value: object) -> list[object]:
    # With the schema loaded ldap3 returns single-valued attributes as scalars.
    return list(value) if isinstance(value, list) else [value]
