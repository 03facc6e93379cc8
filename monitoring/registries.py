"""Several registries behind one setting: ``podRegistryURL`` (or ``--registry-url``) is a list.

A list is written with commas or whitespace between the URLs (an LDAP entry may also give
``podRegistryURL`` several values: they are joined the same way). Publishers send to every
registry of the list, so each registry knows every server; readers park on one of them
and move to the next when it is down or full.
"""

from __future__ import annotations

from podgrid.config.settings import split_registry_urls as split_urls

__all__ = ["join_urls", "split_urls"]


def join_urls(urls: list[str]) -> str:
    """The one-string form of a registry list (what :func:`split_urls` reads back)."""
    return ",".join(urls)
