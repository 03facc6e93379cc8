"""The ``podgrid`` console script: one argparse tree, one module per command group.

Each command module exposes ``register(subparsers)``, which adds its sub-commands and sets
``handler`` (a function taking the parsed namespace and returning the exit code).
Exit codes: 0 success, 1 a runtime failure (unreachable service, ...), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

from config import setup_logging

# Command modules, in the order their groups appear in ``podgrid --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "podgrid._cmd_request",
    "podgrid._cmd_config",
    "podgrid._cmd_monitoring",
    "podgrid._cmd_user",
    "podgrid._cmd_jobs",
    "podgrid._cmd_masterqueue",
    "podgrid._cmd_token",
    "podgrid._cmd_broker",
    "podgrid._cmd_jobagent",
    "podgrid._cmd_site",
    "podgrid._cmd_up",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; used by :func:`main` and by the CLI tests."""
    parser = argparse.ArgumentParser(
        prog="podgrid",
        description="PoD Grid: private, elastic Dask clusters on a grid, within seconds.",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        default="console",
        help="log format for the command itself (services default to json; default: %(default)s)",
    )
    parser.add_argument("--log-level", default="WARNING", help="default: %(default)s")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, set up logging, run the chosen handler and return its exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level.upper())
    handler = cast(Handler, args.handler)
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
