"""``podgrid token create|ls|revoke``: issue, list and revoke the master queue's tokens.

``create --role ROLE --name NAME [--request-id N] [--ttl DURATION]`` calls ``POST /v1/tokens``
with an admin token and prints only the new token (so it can be captured:
``TOKEN=$(podgrid token create --role user --name alice)``); ``--ttl`` makes it expire.
``ls [--name NAME] [--json]`` prints the token records (``GET /v1/tokens``: never a token).
``revoke ID`` or ``revoke --name NAME`` (every live token of that name) calls
``DELETE /v1/tokens/{id}``; the token is refused at once. The master queue's URL
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
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from pydantic import ValidationError

from podgrid._cmd_args import positive_int
from podgrid.config import environment
from podgrid.config.runtime import default_state_dir
from podgrid.config.units import UnitError, parse_duration_s
from podgrid.errors import PodGridError
from podgrid.https import client_session, trust_ca_file
from podgrid.masterqueue.settings import DEFAULT_HTTP_PORT
from podgrid.protocol.api import MAX_TOKEN_TTL_S, TokenInfo, TokenPage

URL_ENV, TOKEN_ENV = environment.URL, environment.TOKEN
REQUEST_TIMEOUT_S = 30.0
LIST_PAGE = 1000


class TokenCommandError(PodGridError):
    """A failure to report; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def register(sub: Any) -> None:
    """Add ``token create``, ``token ls`` and ``token revoke`` to the command tree."""
    group = sub.add_parser("token", help="access tokens of the master queue")
    commands = group.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = commands.add_parser("create", help="issue a token (prints only the token)")
    create.add_argument("--role", required=True, choices=["user", "agent", "broker", "admin"])
    create.add_argument("--name", required=True, help="user or component name (1-128 chars)")
    create.add_argument("--request-id", type=int, default=None, help="broker token's request")
    create.add_argument(
        "--ttl", type=_ttl, default=None, metavar="DURATION", help="expire after (e.g. 7d, 3600)"
    )
    _common(create)
    create.set_defaults(handler=create_command)
    ls = commands.add_parser("ls", help="list tokens (id, role, name, created, expires, revoked)")
    ls.add_argument("--name", default=None, help="only tokens of this name")
    ls.add_argument("--json", action="store_true", help="print the records as JSON")
    _common(ls)
    ls.set_defaults(handler=ls_command)
    revoke = commands.add_parser("revoke", help="revoke a token by id, or every one of a name")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=positive_int, default=None, help="the token's id")
    which.add_argument("--name", default=None, help="revoke every live token of this name")
    _common(revoke)
    revoke.set_defaults(handler=revoke_command)


def _common(parser: Any) -> None:
    parser.add_argument("--url", default=None, help=f"master-queue URL (default: ${URL_ENV})")
    parser.add_argument("--state-dir", type=Path, default=None)


def _ttl(text: str) -> int:
    try:
        seconds = parse_duration_s(text)
    except UnitError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from e
    if not 1 <= seconds <= MAX_TOKEN_TTL_S:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1 s to {MAX_TOKEN_TTL_S} s")
    return seconds


def _endpoints(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / "endpoints.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_url(args: argparse.Namespace, state_dir: Path) -> str:
    """The master queue's URL: flag, environment, endpoints.json, default."""
    local = _endpoints(state_dir)
    if local.get("ca_file") and not os.environ.get(environment.CA_FILE):
        trust_ca_file(Path(str(local["ca_file"])))  # podgrid up's local CA
    found = args.url or os.environ.get(URL_ENV) or local.get("masterqueue_url")
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


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    admin_token: str,
    expected: int,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One admin call; its JSON object (TokenCommandError on any refusal)."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    try:
        async with session.request(method, url, json=body, headers=headers) as resp:
            answer = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise TokenCommandError(f"cannot reach the master queue at {url}: {e}", 1) from e
    if status != expected or not isinstance(answer, dict):
        message = answer.get("message") if isinstance(answer, dict) else None
        raise TokenCommandError(f"{status}: {message or answer}", 2 if status < 500 else 1)
    return answer


def _session() -> aiohttp.ClientSession:
    return client_session(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def create_token(url: str, admin_token: str, body: dict[str, Any]) -> str:
    """``POST /v1/tokens``; the new token (TokenCommandError on any refusal)."""
    async with _session() as session:
        answer = await _call(session, "POST", f"{url}/v1/tokens", admin_token, 201, body)
    if "token" not in answer:
        raise TokenCommandError(f"201 without a token: {answer}", 1)
    return str(answer["token"])


async def list_tokens(url: str, admin_token: str, name: str | None) -> list[TokenInfo]:
    """Every token record (``GET /v1/tokens``, all pages), optionally one name's."""
    found: list[TokenInfo] = []
    after: int | None = None
    async with _session() as session:
        while True:
            query = {"limit": str(LIST_PAGE)} | ({"name": name} if name else {})
            if after is not None:
                query["after"] = str(after)
            answer = await _call(
                session, "GET", f"{url}/v1/tokens?{urlencode(query)}", admin_token, 200
            )
            try:
                page = TokenPage.model_validate(answer)
            except ValidationError as e:
                raise TokenCommandError(f"unexpected answer: {e}", 1) from e
            found += page.tokens
            if page.next is None:
                return found
            after = page.next


async def revoke_tokens(
    url: str, admin_token: str, token_id: int | None, name: str | None
) -> list[TokenInfo]:
    """Revoke token ``token_id``, or every live token called ``name``; their records."""
    if token_id is not None:
        ids = [token_id]
    else:
        live = [t for t in await list_tokens(url, admin_token, name) if t.revoked is None]
        ids = [t.id for t in live]
        if not ids:
            raise TokenCommandError(f"no live token is called {name!r}", 1)
    done: list[TokenInfo] = []
    async with _session() as session:
        for ident in ids:
            answer = await _call(session, "DELETE", f"{url}/v1/tokens/{ident}", admin_token, 200)
            done.append(TokenInfo.model_validate(answer))
    return done


def _run(command: str, args: argparse.Namespace, work: Any) -> int:
    """Run ``work(url, admin_token)``; report a TokenCommandError as ``podgrid token CMD: …``."""
    state_dir = args.state_dir or default_state_dir()
    try:
        asyncio.run(work(find_url(args, state_dir), find_admin_token(state_dir)))
    except TokenCommandError as e:
        print(f"podgrid token {command}: {e}", file=sys.stderr)
        return e.code
    return 0


def create_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid token create``."""
    body = {"role": args.role, "name": args.name, "request_id": args.request_id}
    if args.ttl is not None:
        body["expires_in_s"] = args.ttl

    async def work(url: str, admin: str) -> None:
        print(await create_token(url, admin, body))

    return _run("create", args, work)


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.isoformat(timespec="seconds")


def ls_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid token ls``: one line per token, or ``--json``."""

    async def work(url: str, admin: str) -> None:
        found = await list_tokens(url, admin, args.name)
        if args.json:
            print(json.dumps([t.model_dump(mode="json") for t in found], indent=2))
            return
        print("ID\tROLE\tNAME\tREQUEST\tCREATED\tEXPIRES\tREVOKED")
        for t in found:
            request = "-" if t.request_id is None else str(t.request_id)
            cells = [str(t.id), t.role, t.name, request, _when(t.created)]
            print("\t".join([*cells, _when(t.expires), _when(t.revoked)]))

    return _run("ls", args, work)


def revoke_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid token revoke ID|--name NAME``: prints the revoked ids."""

    async def work(url: str, admin: str) -> None:
        for t in await revoke_tokens(url, admin, args.id, args.name):
            print(f"revoked token {t.id} ({t.role} {t.name!r})")

    return _run("revoke", args, work)
