"""``podgrid config show``: the effective configuration and the DN every value came from."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from podgrid.config.errors import ConfigError, ConfigSourceError
from podgrid.config.hierarchy import ResolvedConfig, default_ldif, resolve
from podgrid.config.settings import FIELD_ATTRIBUTES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``podgrid config show``."""
    config = sub.add_parser("config", help="the LDAP-style configuration hierarchy")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_sub.add_parser(
        "show", help="effective pod* values for a site/CE and the DN each one came from"
    )
    show.add_argument(
        "--config",
        default=None,
        metavar="SRC",
        help="ldap://host:port/<base DN> or an .ldif path (default: the embedded default LDIF)",
    )
    show.add_argument("--site", default=None, help="site name (ou=<site>,ou=Sites,<base>)")
    show.add_argument("--ce", default=None, help="computing element of --site (name=<ce>)")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(handler=show_config)


def show_config(args: argparse.Namespace) -> int:
    """Resolve and print; exit 1 if the source cannot be read, 2 on a bad value or bad input."""
    source = args.config or default_ldif()
    try:
        resolved = resolve(source, args.site, args.ce)
    except ConfigSourceError as e:
        print(f"podgrid config show: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"podgrid config show: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(resolved), indent=2))
    else:
        _print_table(resolved)
    return 0


def as_json(resolved: ResolvedConfig) -> dict[str, Any]:
    """The JSON form: settings and sources keyed by field name, plus the attribute names."""
    return {
        "settings": resolved.settings.model_dump(mode="json"),
        "sources": dict(resolved.sources),
        "attributes": dict(FIELD_ATTRIBUTES),
        "source": resolved.source,
        "site": resolved.site,
        "ce": resolved.ce,
        "missing_levels": list(resolved.missing_levels),
    }


def _print_table(resolved: ResolvedConfig) -> None:
    console = Console(width=None if sys.stdout.isatty() else 200)
    title = f"{resolved.source} site={resolved.site or '-'} ce={resolved.ce or '-'}"
    table = Table(title=Text(title), title_justify="left")
    table.add_column("attribute", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("source DN", no_wrap=True)
    for field, value in resolved.settings.model_dump(mode="json").items():
        shown = ", ".join(value) if isinstance(value, list) else str(value)
        # Text, not markup: DNs carry user-controlled names that may contain "[".
        table.add_row(FIELD_ATTRIBUTES[field], Text(shown), Text(resolved.sources[field]))
    console.print(table)
    for dn in resolved.missing_levels:
        console.print(Text(f"not found: {dn} (less specific levels used)", style="yellow"))
