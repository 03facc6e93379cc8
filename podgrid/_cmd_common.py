"""Plumbing shared by the user commands: endpoint flags, running a coroutine, error → exit code.

Exit codes: 0 success; 1 the service failed or refused (unreachable, 401/403/404/409, 5xx, no
endpoint configured, a wait that ended in a failure or timed out); 2 bad input (a request file
with errors, a bad flag value, a 400 from the service). Every error is one line on stderr
(a request file's problems: one line each, with line and field).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from podgrid.client import NoConnectionYet, PodGrid, RequestFailed, WaitTimeout
from podgrid.config import environment
from podgrid.config.request_errors import RequestError
from podgrid.endpoints import EndpointError
from podgrid.errors import BadRequest, CallFailed, PodGridError, ServiceError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

Command = Callable[[argparse.Namespace, PodGrid], Awaitable[int]]


class UsageError(PodGridError):
    """A bad value the user gave on the command line (exit 2)."""


class CommandFailed(PodGridError):
    """The command could not do what was asked, for a reason the message explains (exit 1)."""


def endpoint_flags() -> argparse.ArgumentParser:
    """A parent parser with ``--url``, ``--token`` and ``--state-dir`` (for every user command)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("master queue")
    group.add_argument(
        "--url", help=f"master-queue URL (default: ${environment.URL}, podgrid up, ...)"
    )
    group.add_argument(
        "--token", help=f"bearer token (default: ${environment.TOKEN}, podgrid up, ...)"
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where `podgrid up` wrote endpoints.json (default: the user's state dir)",
    )
    return parent


def json_flag() -> argparse.ArgumentParser:
    """A parent parser with ``--json``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parent


def run(args: argparse.Namespace, command: Command) -> int:
    """Run ``command`` against the discovered master queue; map every known error to an exit."""
    try:
        return asyncio.run(_with_grid(args, command))
    except RequestError as e:
        return _fail_request(e, args)
    except (UsageError, ValidationError) as e:
        return fail(_usage_text(e), EXIT_BAD_INPUT)
    except BadRequest as e:
        return fail(_http_text(e), EXIT_BAD_INPUT)
    except ServiceError as e:
        return fail(_http_text(e), EXIT_FAILURE)
    except (
        CommandFailed,
        EndpointError,
        CallFailed,
        NoConnectionYet,
        RequestFailed,
        WaitTimeout,
    ) as e:
        return fail(str(e), EXIT_FAILURE)


async def _with_grid(args: argparse.Namespace, command: Command) -> int:
    grid = PodGrid.connect(args.url, args.token, state_dir=args.state_dir)
    async with grid:
        return await command(args, grid)


def fail(message: str, code: int) -> int:
    """Print ``podgrid: error: <message>`` on stderr and return ``code``."""
    print(f"podgrid: error: {message}", file=sys.stderr)
    return code


def print_json(data: Any) -> None:
    """Pretty JSON on stdout (datetimes as ISO 8601)."""
    print(json.dumps(data, indent=2, default=str))


def _fail_request(e: RequestError, args: argparse.Namespace) -> int:
    if getattr(args, "json", False):
        print_json(e.to_dict())
    else:
        print(str(e), file=sys.stderr)
    return EXIT_BAD_INPUT


def _usage_text(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
        return "; ".join(parts)
    return str(e)


def _http_text(e: ServiceError) -> str:
    """The service's message; field complaints with their line when the service gave one."""
    details = []
    for f in e.fields:
        loc = f.get("loc")
        where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
        line = f.get("line")
        prefix = f"line {line}: " if line else ""
        details.append(f"{prefix}{where}: {f.get('msg')}" if where else f"{prefix}{f.get('msg')}")
    text = f"{e.message} ({e.status} {e.code})"
    if details and not all(d in e.message for d in details):
        text += " [" + "; ".join(details) + "]"
    return text
