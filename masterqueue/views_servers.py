"""``GET /v1/servers`` (agent role) and ``POST /v1/requests/{id}/certificate`` (broker role).

Agents attach only to the servers listed: a ``PoD_Masters`` entry in the registry that does
not match one is somebody else's datagram. Each entry carries an attach ticket made for the
asking agent (:func:`podgrid.masterqueue.signing.attach_ticket`), and the list carries the
broker CA that agents trust alone for brokers (:mod:`podgrid.masterqueue.broker_ca`), whose
certificates brokers get from the second route.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Final

from aiohttp import web

from podgrid.errors import BadRequest, http_error
from podgrid.masterqueue import keys
from podgrid.masterqueue.auth import require
from podgrid.masterqueue.broker_ca import server_name, sign_broker
from podgrid.masterqueue.edge import json_body, path_id
from podgrid.masterqueue.signing import (
    TICKET_TTL_S,
    attach_ticket,
    load_sign_key,
    sign_secret,
)
from podgrid.pki import BadCSR
from podgrid.protocol import (
    REQUEST_FINAL,
    RequestState,
    ServerCertificate,
    ServerCertificateRequest,
    ServerList,
    VouchedServer,
)

SERVING: Final = (RequestState.PUBLISHING, RequestState.READY, RequestState.FULL)
PAGE: Final = 500  # requests read per query while listing
CERT_MARGIN_S: Final = 3600  # a broker certificate outlives its request's ttl by this much


async def list_servers(request: web.Request) -> web.Response:
    """Every active request whose broker reported an attach URL, with a ticket for the caller."""
    who = await require(request, "agent")
    store = request.app[keys.STORE]
    key = load_sign_key(request.app[keys.SETTINGS].sign_key_path)
    expires = int(time.time()) + TICKET_TTL_S
    servers: list[VouchedServer] = []
    after: int | None = None
    while True:
        page = await store.list_requests(states=SERVING, limit=PAGE, after_id=after)
        for record in page:
            url = record.connection.attach_url if record.connection is not None else None
            if url:
                ticket = attach_ticket(sign_secret(key, record.id), who.name, expires)
                servers.append(
                    VouchedServer(
                        id=record.id,
                        attach_url=url,
                        server_name=server_name(record.id),
                        ticket=ticket,
                        ticket_expires=expires,
                    )
                )
        if len(page) < PAGE:
            break
        after = page[-1].id
    listing = ServerList(servers=servers, broker_ca=request.app[keys.BROKER_CA].cert_pem)
    return web.json_response(listing.model_dump(mode="json"))


async def broker_certificate(request: web.Request) -> web.Response:
    """The HTTPS certificate of a request's broker, for its CSR (that request's broker token)."""
    who = await require(request, "broker")
    request_id = path_id(request)
    if who.role != "broker" or who.request_id != request_id:
        raise http_error(403, "forbidden", "only this request's broker gets its certificate")
    body = await json_body(request, ServerCertificateRequest)
    record = await request.app[keys.STORE].get_request(request_id)
    if record.state in REQUEST_FINAL:
        raise http_error(409, "request_final", f"request {record.id} is {record.state.value}")
    ttl_s = record.request.ttl_s
    not_after = record.created_at + dt.timedelta(seconds=ttl_s + CERT_MARGIN_S)
    ca = request.app[keys.BROKER_CA]
    try:
        cert = sign_broker(ca, body.csr, request_id, not_after)
    except BadCSR as e:
        raise BadRequest(str(e), code="bad_csr", fields=[{"loc": ["csr"], "msg": str(e)}]) from e
    reply = ServerCertificate(certificate=cert, ca=ca.cert_pem, server_name=server_name(request_id))
    return web.json_response(reply.model_dump(mode="json"))
