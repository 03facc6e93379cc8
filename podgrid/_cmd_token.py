"""``podgrid token create --role ROLE --name NAME [--request-id N]``: issue a token.

Calls ``POST /v1/tokens`` with an admin token and prints only the new token (so it can be
captured: ``TOKEN=$(podgrid token create --role user --name alice)``). The master queue's URL
comes from ``--url``, ``PODGRID_URL``, ``<state dir>/endpoints.json`` or the default
``http://127.0.0.1:8886``; the admin token from ``PODGRID_TOKEN``, ``<state dir>/admin.token``
(written by the first ``podgrid masterqueue serve``) or ``endpoints.json``'s ``admin_token``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from podgrid.config import environment
from podgrid.config.runtime import default_state_dir
from podgrid.errors import PodGridError
from podgrid.masterqueue.settings import DEFAULT_HTTP_PORT

URL_ENV, TOKEN_ENV = environment.URL, environment.TOKEN
REQUEST_TIMEOUT_S = 30.0


class TokenCommandError(PodGridError):
    """A failure to report; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def register(sub: Any) -> None:
    """Add ``token create`` to the command tree."""
    group = sub.add_parser("token", help="access tokens of the master queue")
    commands = group.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = commands.add_parser("create", help="issue a token (prints only the token)")
    create.add_argument("--role", required=True, choices=["user", "agent", "broker", "admin"])
    create.add_argument("--name", required=True, help="user or component name (1-128 chars)")
    create.add_argument("--request-id", type=int, default=None, help="broker token's request")
    create.add_argument("--url", default=None, help=f"master-queue URL (default: ${URL_ENV})")
    create.add_argument("--state-dir", type=Path, default=None)
    create.set_defaults(handler=create_command)


def _endpoints(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / "endpoints.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_url(args: argparse.Namespace, state_dir: Path) -> str:
    """The master queue's URL: flag, environment, endpoints.json, default."""
    found = args.url or os.environ.get(URL_ENV) or _endpoints(state_dir).get("masterqueue_url")
    return str(found or f"http://127.0.0.1:{DEFAULT_HTTP_PORT}").rstrip("/")


def find_admin_token(state_dir: Path) -> str:
    """The admin token: environment, ``admin.token``, endpoints.json."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = state_dir / "admin.token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    token = token or str(_endpoints(state_dir).get("admin_token") or "")
    if not token:
        raise TokenCommandError(f"no admin token: set {TOKEN_ENV} or create {path}", 2)
    return token


async def create_token(url: str, admin_token: str, body: dict[str, Any]) -> str:
    """``POST /v1/tokens``; the new token (TokenCommandError on any refusal)."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {admin_token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}/v1/tokens", json=body, headers=headers) as resp,
        ):
            answer = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise TokenCommandError(f"cannot reach the master queue at {url}: {e}", 1) from e
    if status != 201 or not isinstance(answer, dict) or "token" not in answer:
        message = answer.get("message") if isinstance(answer, dict) else None
        raise TokenCommandError(f"{status}: {message or answer}", 2 if status < 500 else 1)
    return str(answer["token"])


def create_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid token create``."""
    state_dir = args.state_dir or default_state_dir()
    body = {"role": args.role, "name": args.name, "request_id": args.request_id}
    try:
        token = asyncio.run(
            create_token(find_url(args, state_dir), find_admin_token(state_dir), body)
        )
    except TokenCommandError as e:
        print(f"podgrid token create: {e}", file=sys.stderr)
        return e.code
    print(token)
    return 0
