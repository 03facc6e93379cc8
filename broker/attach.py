"""The attach API agents call (``POST /v1/attach``, ``/v1/detach``) and ``POST /v1/sign``.

Served over HTTPS only, with a certificate the master queue signed for this request. Agents
authenticate with an attach ticket (``Authorization: Bearer <ticket>``) the master queue made
for them with this request's sign secret, checked here with no round trip
(:func:`podgrid.masterqueue.signing.check_ticket`): an agent's own token never reaches a
broker, whose scheduler runs code of its owner. Bodies and answers are
:mod:`podgrid.protocol`'s: ``POST /v1/attach`` takes an
``AttachRequest`` (the slot and a CSR for a key the agent made) → 200 ``AttachGrant`` (a
certificate for the CSR's key saying ``worker:<reserved name>``, valid for the cluster's life;
no key) | 409 (error body with ``reason`` ``full``, ``closed`` or ``requirements``, and
``unmet`` for the last) | 401 | 400 (field errors; an unacceptable CSR is ``bad_csr`` on
``csr``, checked before a place is taken). The check and the
grant happen with no ``await`` in between (see :mod:`podgrid.broker.places`).
``POST /v1/detach`` takes a ``DetachRequest`` → 200 ``DetachReply`` | 404 (no such place of
that agent) | 401.

``POST /v1/sign`` is the master queue's, for the owner: ``Authorization: Bearer <sign
secret>`` (the per-request secret the launcher gave this broker, compared in constant time)
and a ``SignRequest`` → 200 ``SignReply`` (a client-only certificate saying ``owner:<user>``)
| 401 | 400 | 404 when this broker was started without a sign secret.
"""

from __future__ import annotations

import hmac
import math
import time
from typing import TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from podgrid.broker import keys
from podgrid.broker.cluster import Broker
from podgrid.broker.places import NoPlace, Place
from podgrid.broker.tls import BadCSR, load_csr, worker_cn
from podgrid.errors import BadRequest, Conflict, NotFound, Unauthorized
from podgrid.masterqueue.signing import check_ticket
from podgrid.protocol import (
    AttachGrant,
    AttachRequest,
    DetachReply,
    DetachRequest,
    SignReply,
    SignRequest,
    SlotDescription,
    unmet,
)
from podgrid.web import bearer_token, validation_error

M = TypeVar("M", bound=BaseModel)
log = structlog.get_logger("podgrid.broker")


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, headers={"WWW-Authenticate": "Bearer"})


def _authorize(request: web.Request) -> str:
    """The agent an attach ticket was made for (401 without a valid, unexpired one)."""
    ticket = bearer_token(request)  # None also for non-ASCII bytes: a 401, never a 500
    secret = request.app[keys.SETTINGS].sign_secret
    if ticket is None or secret is None:
        raise _unauthorized("an attach ticket is needed: Authorization: Bearer <ticket>")
    agent = check_ticket(secret, ticket, time.time())
    if agent is None:
        raise _unauthorized("not a valid attach ticket of this server (or it expired)")
    return agent


async def _body(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as e:
        raise validation_error(e) from e


def _lifetime_s(broker: Broker, slot: SlotDescription) -> int:
    """Below the slot's remaining TTL (margin) and no longer than the cluster lives."""
    margin = broker.settings.lifetime_margin_s
    cluster_left = broker.expires_s - time.time()
    return max(1, math.floor(min(slot.ttl_s - margin, cluster_left)))


def _bad_csr(e: BadCSR) -> BadRequest:
    return BadRequest(
        f"csr: {e}", code="bad_csr", fields=[{"loc": ["csr"], "msg": str(e), "type": "bad_csr"}]
    )


def _grant(broker: Broker, place: Place, slot: SlotDescription, cert_pem: str) -> AttachGrant:
    worker = broker.request.worker
    return AttachGrant(
        name=place.name,
        request_id=broker.record.id,
        scheduler_address=broker.scheduler.address,
        tls_ca=broker.tls.ca.cert_pem,
        tls_cert=cert_pem,
        nthreads=worker.cores,
        memory_limit=f"{worker.memory_mb}MiB",
        memory_limit_mb=worker.memory_mb,
        lifetime_s=_lifetime_s(broker, slot),
        attach_timeout_s=broker.places.attach_timeout_s,
    )


async def attach(request: web.Request) -> web.Response:
    """``POST /v1/attach``: grant one place to an agent's slot, or say why not."""
    started = time.perf_counter()
    metrics = request.app[keys.METRICS]
    try:
        _authorize(request)
    except Unauthorized:
        metrics.attaches.labels(outcome="unauthorized").inc()
        raise
    body = await _body(request, AttachRequest)
    slot: SlotDescription = body  # an AttachRequest is the slot plus its CSR
    try:
        csr = load_csr(body.csr)
    except BadCSR as e:
        metrics.attaches.labels(outcome="bad_csr").inc()
        raise _bad_csr(e) from e
    broker = request.app[keys.BROKER]
    problems = unmet(
        broker.requirements,
        cores=slot.cores,
        memory_mb=slot.memory_mb,
        packages=slot.packages,
        site=slot.site,
        ttl_s=slot.ttl_s,
    )
    if problems:
        metrics.attaches.labels(outcome="requirements").inc()
        extra = {"reason": "requirements", "unmet": problems}
        raise Conflict("; ".join(problems), extra=extra)
    # From here to the grant: no await, so the check and the reservation are one step.
    try:
        place = broker.places.reserve(slot)
    except NoPlace as e:
        metrics.attaches.labels(outcome=e.reason).inc()
        raise Conflict(f"the cluster is {e.reason}", extra={"reason": e.reason}) from e
    # A retried attach of the same agent gets its pending place again, signed for its new CSR.
    cert = broker.tls.ca.sign(csr, worker_cn(place.name), "worker", broker.tls.not_after)
    grant = _grant(broker, place, slot, cert)
    broker.changed()
    metrics.attaches.labels(outcome="granted").inc()
    metrics.attach_seconds.observe(time.perf_counter() - started)
    return web.json_response(grant.model_dump())


async def detach(request: web.Request) -> web.Response:
    """``POST /v1/detach``: give back a reservation, or retire the agent's running worker."""
    _authorize(request)
    body = await _body(request, DetachRequest)
    broker = request.app[keys.BROKER]
    if broker.places.release(body.name, body.agent_id) is not None:
        broker.changed()
        return web.json_response(DetachReply(name=body.name, released="reservation").model_dump())
    place = broker.places.get(body.name)
    if place is None or place.agent_id != body.agent_id or place.address is None:
        raise NotFound(f"agent {body.agent_id!r} holds no place {body.name!r}")
    broker.spawn(
        broker.scheduler.retire_workers(workers=[place.address], close_workers=True),
        "broker-detach",
    )
    return web.json_response(DetachReply(name=body.name, released="worker").model_dump())


async def sign(request: web.Request) -> web.Response:
    """``POST /v1/sign``: the owner's client certificate, for the master queue (sign secret)."""
    secret = request.app[keys.SETTINGS].sign_secret
    if secret is None:
        raise NotFound("this broker signs no owner certificates (started without a sign secret)")
    header = request.headers.get("Authorization", "")
    offered = header[len("Bearer ") :].strip() if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(offered.encode("utf-8", "replace"), secret.encode()):
        raise _unauthorized("the request's sign secret is needed: Authorization: Bearer …")
    body = await _body(request, SignRequest)
    broker = request.app[keys.BROKER]
    try:
        cert = broker.tls.sign_owner(body.csr)
    except BadCSR as e:
        raise _bad_csr(e) from e
    log.info("broker.owner_signed", request_id=broker.record.id, owner=broker.record.owner)
    return web.json_response(
        SignReply(tls_client_cert=cert, tls_ca=broker.tls.ca.cert_pem).model_dump()
    )
