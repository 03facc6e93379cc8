"""The owner's routes on its broker: scaling and its status, behind the owner's certificate.

The broker's HTTPS server asks every client for a certificate and trusts the cluster CA alone
for them (:func:`owner_tls_context`); agents and the master queue send none and go on as
before (tickets, the sign secret). A route here admits a connection only when its verified
client certificate says ``owner:<user>`` of this cluster (:func:`require_owner`): 401 without
a certificate, 403 with any other (a worker's). The owner gets that certificate for a key of
its own (``PodGrid.connection``); nothing here takes a token, so a leaked master-queue token
alone opens no broker.

- ``GET /v1/owner/scaling`` → 200 :class:`ScalingStatus`
- ``POST /v1/owner/scale`` :class:`ScaleRequest` → 200 :class:`ScalingStatus`
- ``POST /v1/owner/adapt`` :class:`AdaptRequest` → 200 :class:`ScalingStatus`
"""

from __future__ import annotations

import ssl
from collections import Counter
from pathlib import Path
from typing import TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from podgrid.broker import keys
from podgrid.broker.cluster import Broker
from podgrid.broker.tls import peer_common_name
from podgrid.errors import Forbidden, Unauthorized
from podgrid.protocol import AdaptRequest, ScaleRequest, ScalingStatus
from podgrid.web import validation_error

M = TypeVar("M", bound=BaseModel)
log = structlog.get_logger("podgrid.broker")


def owner_tls_context(cert_file: Path, key_file: Path, cluster_ca_pem: str) -> ssl.SSLContext:
    """The broker's HTTPS server context: its certificate, and client certificates optional.

    A client certificate is verified against the cluster CA and nothing else (no system CA:
    only this cluster's certificates can say ``owner:``).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=cluster_ca_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def require_owner(request: web.Request) -> Broker:
    """The broker, when the caller's verified client certificate is the owner's (else 401/403)."""
    broker = request.app[keys.BROKER]
    transport = request.transport
    cn = peer_common_name(None if transport is None else transport.get_extra_info("peercert"))
    if cn is None:
        raise Unauthorized(
            "the cluster owner's client certificate is needed (podgrid info -d says which)"
        )
    if cn != broker.tls.owner_cn:
        log.warning("broker.owner_refused", cn=cn)
        raise Forbidden("only the cluster's owner may do this")
    return broker


async def _body(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as e:
        raise validation_error(e) from e


def status(broker: Broker) -> ScalingStatus:
    """How the broker sizes the cluster now."""
    scaling = broker.scaling
    sites = Counter(w.site for w in broker.places.workers())
    return ScalingStatus(
        mode=scaling.mode,
        target=broker.target,
        minimum=scaling.minimum,
        maximum=scaling.maximum,
        workers=broker.places.connected,
        pending=broker.places.pending,
        needed=broker.needed(),
        sites=dict(sites),
    )


async def get_scaling(request: web.Request) -> web.Response:
    """``GET /v1/owner/scaling``."""
    return web.json_response(status(require_owner(request)).model_dump())


async def scale(request: web.Request) -> web.Response:
    """``POST /v1/owner/scale``: keep ``n`` workers."""
    broker = require_owner(request)
    body = await _body(request, ScaleRequest)
    broker.scale(body.n)
    return web.json_response(status(broker).model_dump())


async def adapt(request: web.Request) -> web.Response:
    """``POST /v1/owner/adapt``: adaptive between ``minimum`` and ``maximum``, on the broker."""
    broker = require_owner(request)
    body = await _body(request, AdaptRequest)
    broker.adapt(body.minimum, body.maximum)
    return web.json_response(status(broker).model_dump())


def add_routes(app: web.Application) -> None:
    """The owner's routes (the dashboard's are :func:`podgrid.broker.dashboard.add_routes`)."""
    app.router.add_get("/v1/owner/scaling", get_scaling)
    app.router.add_post("/v1/owner/scale", scale)
    app.router.add_post("/v1/owner/adapt", adapt)
