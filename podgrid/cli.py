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
from typing import Any, cast

from podgrid.config import setup_logging

# The top-level command → the module that registers it, in ``podgrid --help`` order. Only the
# module of the command being run is imported: a broker or agent started by a launcher must
# not pay for every other command's imports (SQLAlchemy, Alembic, asyncssh, ...).
COMMANDS: dict[str, str] = {
    "up": "podgrid._cmd_up",
    "demo": "podgrid._cmd_demo",
    "submit": "podgrid._cmd_user",
    "info": "podgrid._cmd_user",
    "ls": "podgrid._cmd_user",
    "cancel": "podgrid._cmd_user",
    "jobs": "podgrid._cmd_jobs",
    "request": "podgrid._cmd_request",
    "config": "podgrid._cmd_config",
    "token": "podgrid._cmd_token",
    "monitoring": "podgrid._cmd_monitoring",
    "masterqueue": "podgrid._cmd_masterqueue",
    "broker": "podgrid._cmd_broker",
    "jobagent": "podgrid._cmd_jobagent",
    "site": "podgrid._cmd_site",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))

Handler = Callable[[argparse.Namespace], int]


class _OwnCommands:
    """The sub-command tree as one command module sees it: only the commands COMMANDS routes
    to that module are added; any other it defines goes to a scratch parser, dropped.

    So COMMANDS alone says which module owns a command, and a command moves by one line
    here (as ``demo`` moved from ``_cmd_up`` to ``_cmd_demo``).
    """

    def __init__(
        self, sub: argparse._SubParsersAction[argparse.ArgumentParser], module: str
    ) -> None:
        self._sub, self._module = sub, module

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if COMMANDS.get(name) == self._module:
            return self._sub.add_parser(name, **kwargs)
        return argparse.ArgumentParser(prog=f"podgrid {name}", add_help=False)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command tree: only ``command``'s module when it is a known command, else all."""
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
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(_OwnCommands(sub, name))
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The top-level command in ``argv`` (after the global options), if any."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-format")
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.command if isinstance(known.command, str) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, set up logging, run the chosen handler and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    setup_logging(args.log_format, args.log_level.upper())
    handler = cast(Handler, args.handler)
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
