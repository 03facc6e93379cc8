"""The one error shape of every PoD Grid HTTP service, on both ends of the wire.

Services install :func:`error_middleware`: a :class:`podgrid.errors.ServiceError` raised by a
handler (or mapped from a domain error by ``map_error``) becomes its JSON body
``{"error": code, "message": ..., "fields": [...]}``; aiohttp's own 404/405/413 take the
same shape; anything unexpected is logged with a request id and answered 500 carrying it
(every answer has ``X-Request-Id``). Clients turn an error answer back into the same
exception classes with :func:`decode_error`.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
from aiohttp import web
from pydantic import ValidationError

from podgrid.errors import BadRequest, ServerError, ServiceError, error_class
from podgrid.protocol.errors import ErrorBody

__all__ = [
    "MAX_HEADER_ID_CHARS",
    "MAX_TOKEN_CHARS",
    "bearer_token",
    "decode_error",
    "error_middleware",
    "error_response",
    "start_site",
    "validation_error",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MapError = Callable[[Exception], ServiceError | None]
Observe = Callable[[web.Request, web.StreamResponse, float], None]

MAX_HEADER_ID_CHARS: Final = 64  # a client's X-Request-Id beyond this is cut
MAX_TOKEN_CHARS: Final = 512  # a bearer token longer than this is refused unread
_BEARER: Final = "bearer "
_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error_response(e: ServiceError) -> web.Response:
    """The JSON answer for ``e``."""
    body = {**e.extra, "error": e.code, "message": e.message, "fields": e.fields}
    return web.json_response(body, status=e.status, headers=e.headers)


def validation_error(e: ValidationError, code: str = "invalid_body") -> BadRequest:
    """A 400 naming every field pydantic refused."""
    fields = [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in e.errors(include_url=False, include_input=False)
    ]
    what = "; ".join(f"{'.'.join(str(p) for p in f['loc']) or 'body'}: {f['msg']}" for f in fields)
    return BadRequest(f"invalid body: {what}", code=code, fields=fields)


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when there is no usable one.

    Only printable ASCII without spaces, 1 to :data:`MAX_TOKEN_CHARS` characters, is a token:
    aiohttp hands a header's non-ASCII bytes on as surrogate escapes, and anything downstream
    that encodes them (hashing, comparing) would raise. Every service reads tokens through
    this one function, so a stray byte in the header is a 401, never a 500.
    """
    header = request.headers.get("Authorization", "")
    if header[: len(_BEARER)].lower() != _BEARER:
        return None
    token = header[len(_BEARER) :].strip(" \t")
    if not 0 < len(token) <= MAX_TOKEN_CHARS:
        return None
    if not (token.isascii() and token.isprintable()) or " " in token:
        return None
    return token


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")[:MAX_HEADER_ID_CHARS]
    return given if given.isascii() and given.isprintable() and given else uuid.uuid4().hex


def error_middleware(
    service: str, *, map_error: MapError | None = None, observe: Observe | None = None
) -> Any:
    """The middleware of ``service`` (its name prefixes the ``request_failed`` log event).

    ``map_error`` turns a domain exception into a :class:`ServiceError` (None: unexpected);
    ``observe`` sees every answer with its duration in seconds (metrics).
    """
    log = structlog.get_logger(f"podgrid.{service}")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = _request_id(request)
        started = time.perf_counter()
        try:
            resp = await handler(request)
        except ServiceError as e:
            resp = error_response(e)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = _HTTP_CODES.get(e.status, f"http_{e.status}")
            resp = error_response(
                error_class(e.status)(e.reason or code, code=code, status=e.status)
            )
        except Exception as e:
            mapped = map_error(e) if map_error is not None else None
            if mapped is None:
                log.exception(
                    f"{service}.request_failed",
                    request_id=request_id,
                    method=request.method,
                    path=request.path,
                )
                mapped = ServerError(
                    f"internal error (request id {request_id})", extra={"request_id": request_id}
                )
            resp = error_response(mapped)
        resp.headers["X-Request-Id"] = request_id
        if observe is not None:
            observe(request, resp, time.perf_counter() - started)
        return resp

    return middleware


def decode_error(status: int, reason: str, text: str, service: str = "") -> ServiceError:
    """The exception for an error answer: its body's code, message, fields and extra keys.

    An answer that is not the error body (a proxy's HTML page, say) still gives the class
    for its status, with the start of the text as the message.
    """
    cls = error_class(status)
    prefix = f"{service}: " if service else ""
    try:
        body = ErrorBody.model_validate(json.loads(text))
    except (ValueError, ValidationError):
        code = reason.lower().replace(" ", "_") or f"http_{status}"
        return cls(prefix + (text[:200] or reason or code), code=code, status=status)
    extra = dict(body.model_extra or {})
    return cls(
        prefix + body.message,
        code=body.error,
        fields=body.field_dicts(),
        status=status,
        extra=extra,
    )


async def start_site(
    runner: web.AppRunner, host: str, port: int, context: ssl.SSLContext | None
) -> str:
    """Listen on ``host:port`` (0: a free port), with TLS when ``context``; the service's URL.

    ``context`` comes from :func:`podgrid.https.listen_tls`, which refused plain HTTP where it
    is not allowed.
    """
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    bound_host, bound_port = runner.addresses[-1][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return f"{'http' if context is None else 'https'}://{shown}:{bound_port}"
