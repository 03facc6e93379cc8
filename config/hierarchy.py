"""The one resolver of the configuration hierarchy: CE -> site -> ou=Config, most specific wins."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from podgrid.config.directory import Directory, Entry, Path, open_directory, path_dn
from podgrid.config.errors import ConfigError, ConfigValueError
from podgrid.config.settings import ATTRIBUTE_FIELDS, PodSettings, convert_value

BUILTIN_DEFAULT = "built-in default"  # the "DN" of a value no level of the hierarchy sets

_FIELDS_BY_LOWER_ATTRIBUTE = {a.lower(): f for a, f in ATTRIBUTE_FIELDS.items()}


@dataclass(frozen=True)
class ResolvedConfig:
    """Effective settings for one (site, CE) and, for every field, the DN that set it."""

    settings: PodSettings
    sources: dict[str, str]
    source: str
    site: str | None = None
    ce: str | None = None
    missing_levels: tuple[str, ...] = ()

    @property
    def used_defaults(self) -> bool:
        """True when a level that was asked for does not exist in the directory."""
        return bool(self.missing_levels)


def default_ldif() -> str:
    """Path of the packaged embedded default (``config/data/podgrid.ldif``)."""
    return str(resources.files("podgrid.config").joinpath("data", "podgrid.ldif"))


def schema_file() -> str:
    """Path of the packaged OpenLDAP schema (``config/data/podgrid.schema``)."""
    return str(resources.files("podgrid.config").joinpath("data", "podgrid.schema"))


def config_path() -> Path:
    """The grid-wide defaults entry: ``ou=Config,<base>``."""
    return (("ou", "Config"),)


def site_path(site: str) -> Path:
    """A site's entry: ``ou=<site>,ou=Sites,<base>``."""
    return (("ou", "Sites"), ("ou", site))


def ce_path(site: str, ce: str) -> Path:
    """A CE's entry: ``name=<ce>,ou=CE,ou=Services,ou=<site>,ou=Sites,<base>``."""
    return (*site_path(site), ("ou", "Services"), ("ou", "CE"), ("name", ce))


def levels(site: str | None, ce: str | None) -> list[Path]:
    """The entries to read for (site, ce), most specific first."""
    for what, name in (("site", site), ("CE", ce)):
        if name is not None and not name.strip():
            raise ConfigError(f"the {what} name must not be empty")
    if ce is not None and site is None:
        raise ConfigError(f"CE {ce!r} needs its site: a CE is only looked up under its site")
    found: list[Path] = []
    if site is not None and ce is not None:
        found.append(ce_path(site, ce))
    if site is not None:
        found.append(site_path(site))
    found.append(config_path())
    return found


def resolve(
    source: str | os.PathLike[str], site: str | None = None, ce: str | None = None
) -> ResolvedConfig:
    """Read ``source`` (LDAP URL or LDIF path) and resolve the settings of (site, ce).

    Raises ConfigSourceError when the source cannot be read, ConfigValueError on a bad value.
    """
    with open_directory(source) as directory:
        return resolve_in(directory, site, ce)


def resolve_in(directory: Directory, site: str | None, ce: str | None) -> ResolvedConfig:
    """Resolve (site, ce) against an open directory; every pod* value read is validated."""
    entries: list[Entry] = []
    missing: list[str] = []
    for path in levels(site, ce):
        entry = directory.lookup(path)
        if entry is None:
            missing.append(path_dn(path, directory.base_dn))
        else:
            entries.append(entry)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for entry in entries:
        for field, value in _entry_values(entry):
            if field not in values:
                values[field] = value
                sources[field] = entry.dn
    settings = PodSettings.model_validate(values)
    sources = {field: sources.get(field, BUILTIN_DEFAULT) for field in PodSettings.model_fields}
    return ResolvedConfig(
        settings=settings,
        sources=sources,
        source=directory.source,
        site=site,
        ce=ce,
        missing_levels=tuple(missing),
    )


def _entry_values(entry: Entry) -> list[tuple[str, Any]]:
    """The validated pod* values of one entry; an unknown pod* attribute is an error."""
    found: list[tuple[str, Any]] = []
    for name, raw in entry.attributes.items():
        field = _FIELDS_BY_LOWER_ATTRIBUTE.get(name)
        if field is None:
            if name.startswith("pod"):
                raise ConfigValueError(entry.dn, name, _shown(raw), "a known pod* attribute")
            continue
        found.append((field, convert_value(field, raw, entry.dn)))
    return found


def _shown(raw: Sequence[object]) -> object:
    return raw[0] if len(raw) == 1 else list(raw)
