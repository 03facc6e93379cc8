"""The owner's Dask dashboard, served through the broker's HTTPS server.

The scheduler's bokeh dashboard listens only on a private Unix socket of the broker
(:mod:`podgrid.broker.dashboard_server`). Every path under ``/dashboard`` of the broker's
HTTPS server is forwarded there, HTTP and WebSocket alike (bokeh's plots update over a
WebSocket), after :func:`podgrid.broker.owner.require_owner` has checked the caller's client
certificate: the owner's browser (or ``cluster.dashboard_link`` opened with the owner's
certificate) sees the task stream, anyone else gets 401/403 and never a byte of the
dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Final

import aiohttp
from aiohttp import web

from podgrid.broker import keys
from podgrid.broker.dashboard_server import DASHBOARD_PREFIX
from podgrid.broker.owner import require_owner

UPSTREAM: Final = "http://dashboard"  # the host name is not used: the socket is the address
# Headers that belong to one hop (RFC 9110 §7.6.1), or that aiohttp sets itself.
_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)
_WS_HEADERS: Final = frozenset({"sec-websocket-key", "sec-websocket-version",
                                "sec-websocket-extensions", "sec-websocket-protocol"})  # fmt: skip


async def dashboard_session(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: one client session on the scheduler's dashboard socket."""
    socket = app[keys.BROKER].dashboard_socket
    if socket is None:  # not reached: the scheduler always has its dashboard
        yield
        return
    connector = aiohttp.UnixConnector(path=str(socket))
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[keys.DASHBOARD_SESSION] = session
        yield


def _forwarded(headers: Mapping[str, str], drop: frozenset[str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in drop}


async def proxy(request: web.Request) -> web.StreamResponse:
    """``/dashboard/...``: the scheduler's dashboard, for the owner only."""
    require_owner(request)
    session = request.app[keys.DASHBOARD_SESSION]
    url = UPSTREAM + request.raw_path
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _websocket(request, session, url)
    async with session.request(
        request.method,
        url,
        headers=_forwarded(request.headers, _HOP),
        data=await request.read() if request.can_read_body else None,
        allow_redirects=False,
    ) as upstream:
        body = await upstream.read()
        return web.Response(
            status=upstream.status,
            body=body,
            headers=_forwarded(upstream.headers, _HOP | {"content-type"}),
            content_type=upstream.content_type,
            charset=upstream.charset,
        )


async def _websocket(
    request: web.Request, session: aiohttp.ClientSession, url: str
) -> web.WebSocketResponse:
    offered = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    headers = _forwarded(request.headers, _HOP | _WS_HEADERS)
    async with session.ws_connect(
        url, protocols=offered, headers=headers, max_msg_size=0, autoping=True
    ) as upstream:
        chosen = [upstream.protocol] if upstream.protocol else []
        downstream = web.WebSocketResponse(protocols=chosen, max_msg_size=0)
        await downstream.prepare(request)
        pumps = [
            asyncio.ensure_future(_pump(upstream, downstream)),
            asyncio.ensure_future(_pump(downstream, upstream)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            with contextlib.suppress(Exception):
                await downstream.close()
        return downstream


async def _pump(
    source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
    sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        else:
            break


def add_routes(app: web.Application) -> None:
    """``/dashboard`` and everything below it, and the session they use."""
    app.cleanup_ctx.append(dashboard_session)
    for path in (DASHBOARD_PREFIX, DASHBOARD_PREFIX + "/{tail:.*}"):
        app.router.add_get(path, proxy)  # a WebSocket too (an upgraded GET)
        app.router.add_post(path, proxy)
