"""``GET /v1/servers`` (agent role): the attach URLs of active requests, as their brokers said.

Agents attach only to these: a ``PoD_Masters`` entry in the registry that does not match one
is somebody else's datagram, and never sees an agent token.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from podgrid.masterqueue import keys
from podgrid.masterqueue.auth import require
from podgrid.protocol import RequestState, ServerList, VouchedServer

SERVING: Final = (RequestState.PUBLISHING, RequestState.READY, RequestState.FULL)
PAGE: Final = 500  # requests read per query while listing


async def list_servers(request: web.Request) -> web.Response:
    """Every active request whose broker reported an attach URL."""
    await require(request, "agent")
    store = request.app[keys.STORE]
    servers: list[VouchedServer] = []
    after: int | None = None
    while True:
        page = await store.list_requests(states=SERVING, limit=PAGE, after_id=after)
        for record in page:
            url = record.connection.attach_url if record.connection is not None else None
            if url:
                servers.append(VouchedServer(id=record.id, attach_url=url))
        if len(page) < PAGE:
            break
        after = page[-1].id
    return web.json_response(ServerList(servers=servers).model_dump(mode="json"))
