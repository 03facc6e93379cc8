"""Reading outside input at the HTTP edge: JSON bodies into pydantic models, query parameters.

Each helper either returns a typed value or raises a 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from podgrid.errors import http_error
from podgrid.web import validation_error

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E")

MAX_PAGE = 1000
DEFAULT_PAGE = 50
MAX_IDEMPOTENCY_KEY_CHARS = 128


async def body_text(request: web.Request) -> str:
    """The body as UTF-8 text (400 when it is not UTF-8)."""
    raw = await request.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise http_error(
            400, "bad_encoding", f"the body must be UTF-8: byte {e.start} is not valid"
        ) from e


def parse_json(text: str) -> Any:
    """A JSON document (400 ``bad_json`` with the line and column of a syntax error)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = {"loc": ["body"], "msg": e.msg, "line": e.lineno, "column": e.colno}
        raise http_error(
            400,
            "bad_json",
            f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
            [where],
        ) from e
    except RecursionError as e:
        raise http_error(400, "bad_json", "body is not valid JSON: nested too deeply") from e


async def json_body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated as ``model`` (400 ``bad_json`` or ``invalid_body``)."""
    data = parse_json(await body_text(request))
    if not isinstance(data, dict):
        raise http_error(
            400,
            "invalid_body",
            "the body must be a JSON object",
            [{"loc": [], "msg": "must be a JSON object"}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from e


def path_id(request: web.Request, name: str = "id") -> int:
    """A positive integer path segment (404 otherwise: no such record)."""
    text = request.match_info[name]
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise http_error(404, "not_found", f"no record with id {text!r}")
    return int(text)


def _query_int(
    request: web.Request, name: str, default: int | None, lo: int, hi: int
) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise http_error(
            400,
            "invalid_query",
            f"{name}: expected an integer {lo}..{hi}, got {text!r}",
            [{"loc": ["query", name], "msg": f"expected an integer {lo}..{hi}"}],
        )
    return int(text)


def wait_params(request: web.Request, max_wait_s: float) -> tuple[float, str | None]:
    """``?wait=SECONDS`` (0..max, decimals allowed; default 0) and ``?since=VERSION``."""
    text = request.query.get("wait") or "0"
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= max_wait_s:  # also refuses nan and inf
        raise http_error(
            400,
            "invalid_query",
            f"wait: expected seconds 0..{max_wait_s:g}, got {text[:40]!r}",
            [{"loc": ["query", "wait"], "msg": f"expected seconds 0..{max_wait_s:g}"}],
        )
    since = request.query.get("since")
    if since is not None and (len(since) > 64 or not since.isprintable()):
        raise http_error(
            400,
            "invalid_query",
            "since: expected the version of an earlier answer",
            [{"loc": ["query", "since"], "msg": "expected the version of an earlier answer"}],
        )
    return wait, since


def page_params(request: web.Request) -> tuple[int, int | None]:
    """``?limit=`` (1..1000, default 50) and ``?after=`` (the ``next`` cursor of the last page)."""
    limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after = _query_int(request, "after", None, 0, 2**62)
    assert limit is not None
    return limit, after


def state_params(request: web.Request, parse: Callable[[str], E]) -> list[E] | None:
    """``?state=A,B`` (or repeated) parsed with ``parse``; None when absent."""
    raw = [part for value in request.query.getall("state", []) for part in value.split(",")]
    wanted = [part.strip().upper() for part in raw if part.strip()]
    if not wanted:
        return None
    try:
        return [parse(s) for s in wanted]
    except ValueError as e:
        raise http_error(
            400, "invalid_query", f"state: {e}", [{"loc": ["query", "state"], "msg": str(e)}]
        ) from e


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header (1..128 printable characters) or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise http_error(
            400,
            "invalid_header",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
            [{"loc": ["header", "Idempotency-Key"], "msg": "1 to 128 printable characters"}],
        )
    return key


def page(items: list[dict[str, Any]], limit: int, name: str) -> dict[str, Any]:
    """A listing answer: ``{name: items, "next": <last id> | null}``."""
    nxt = items[-1]["id"] if len(items) == limit and items else None
    return {name: items, "next": nxt}
