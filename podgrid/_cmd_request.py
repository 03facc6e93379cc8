"""``podgrid request check FILE``: parse and validate a server-request file (TOML, JDL, JSON).

Prints the parsed request (a table, or the model as JSON with ``--json``) and exits 0, or
prints every problem with its line and field and exits 2 (on stderr; with ``--json`` a JSON
object with ``source``/``line``/``column``/``field``/``problem`` and ``errors`` on stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from podgrid._cmd_args import positive_int
from podgrid.config.request import DEFAULT_MAX_WORKERS_CAP, ServerRequest, load_request
from podgrid.config.request_errors import RequestError
from podgrid.config.units import format_duration


def register(sub: Any) -> None:
    """Add ``request check`` to the ``podgrid`` command tree."""
    group = sub.add_parser("request", help="server-request files")
    commands = group.add_subparsers(dest="request_command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="parse and validate a request file (TOML, JDL or JSON)",
        description="Print the parsed request, or every error with its line and field.",
    )
    check.add_argument("file", metavar="FILE", help="a .toml, .jdl or .json request file")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument(
        "--max-workers-cap",
        type=positive_int,
        default=DEFAULT_MAX_WORKERS_CAP,
        metavar="N",
        help="the operator's limit on max_workers (default: %(default)s)",
    )
    check.set_defaults(handler=check_request)


def check_request(args: argparse.Namespace) -> int:
    """Handler of ``podgrid request check``: 0 when the request is valid, 2 otherwise."""
    try:
        request = load_request(args.file, max_workers_cap=args.max_workers_cap)
    except RequestError as e:
        if args.json:
            print(json.dumps(e.to_dict(), indent=2))
        else:
            print(str(e), file=sys.stderr)
        return 2
    if args.json:
        print(request.model_dump_json(indent=2))
    else:
        Console(file=sys.stdout, soft_wrap=True).print(_table(request, args.file))
    return 0


def _table(request: ServerRequest, file: str) -> Table:
    table = Table(title=f"server request from {file}", title_justify="left")
    table.add_column("field")
    table.add_column("value")
    worker = request.worker
    rows = [
        ("name", request.name),
        ("min_workers", str(request.min_workers)),
        ("max_workers", str(request.max_workers)),
        ("max_wait", f"{format_duration(request.max_wait_s)} ({request.max_wait_s} s)"),
        ("ttl", f"{format_duration(request.ttl_s)} ({request.ttl_s} s)"),
        ("idle_timeout", _idle_timeout(request.idle_timeout_s)),
        ("adaptive", str(request.adaptive).lower()),
        ("engine", request.engine),
        ("worker.cores", str(worker.cores)),
        ("worker.memory", f"{worker.memory_mb} MiB"),
        ("worker.packages", ", ".join(worker.packages) or "(none)"),
        ("worker.sites", ", ".join(worker.sites) or "(any)"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    return table


def _idle_timeout(seconds: int | None) -> str:
    """The request's idle timeout; unset means the site's ``podServerIdleTimeout`` applies."""
    if seconds is None:
        return "site default (podServerIdleTimeout)"
    return f"{format_duration(seconds)} ({seconds} s)"
