"""Several registries behind one setting: ``podRegistryURL`` (or ``--registry-url``) is a list.

A list is written with commas or whitespace between the URLs (an LDAP entry may also give
``podRegistryURL`` several values: they are joined the same way). Publishers send to every
registry of the list, so each registry knows every server; readers park on one of them
and move to the next when it is down or full.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[,\s]+")


def split_urls(text: str) -> list[str]:
    """The URLs of a registry list, in order, without duplicates or trailing slashes."""
    urls: list[str] = []
    for part in _SEPARATORS.split(text.strip()):
        url = part.rstrip("/")
        if url and url not in urls:
            urls.append(url)
    return urls


def join_urls(urls: list[str]) -> str:
    """The one-string form of a registry list (what :func:`split_urls` reads back)."""
    return ",".join(urls)
