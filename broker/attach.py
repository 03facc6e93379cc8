"""The attach API agents call: ``POST /v1/attach`` and ``POST /v1/detach`` (JSON, agent token).

``POST /v1/attach`` body: the slot (``agent_id, site, ce, host, cores, memory_mb, ttl_s,
packages``) → 200 :class:`AttachGrant` | 409 ``{"reason": "full"|"closed"|"requirements",
"message", "unmet": [...]}`` | 401 | 400 (field errors) | 503 (token not checkable now).
The check and the grant happen with no ``await`` in between (see :mod:`podgrid.broker.places`).
``POST /v1/detach`` body ``{"agent_id", "name"}`` → 200 ``{"name", "released":
"reservation"|"worker"}`` | 404 (no such place of that agent) | 401.
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from podgrid.broker import keys
from podgrid.broker.cluster import Broker
from podgrid.broker.places import NoPlace, Place
from podgrid.broker.requirements import unmet
from podgrid.masterqueue.models import SlotDescription

MAX_TOKEN_CHARS = 512
M = TypeVar("M", bound=BaseModel)
_BEARER = "bearer "


class AttachGrant(BaseModel):
    """What an agent needs to run one Dask worker of the cluster."""

    model_config = ConfigDict(frozen=True)

    name: str
    request_id: int
    scheduler_address: str
    tls_ca: str
    tls_cert: str
    tls_key: str
    nthreads: int
    memory_limit: str  # as ``dask worker --memory-limit`` takes it, e.g. "2048MiB"
    memory_limit_mb: int
    lifetime_s: int
    attach_timeout_s: float


class DetachBody(BaseModel):
    """``POST /v1/detach``: the place an agent gives back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=128)]


def _error(status: int, error: str, message: str, **extra: Any) -> web.HTTPException:
    body = json.dumps({"error": error, "message": message, **extra})
    cls: type[web.HTTPException] = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        503: web.HTTPServiceUnavailable,
    }[status]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return cls(text=body, content_type="application/json", headers=headers)


async def _authorize(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    token = header[len(_BEARER) :].strip() if header.lower().startswith(_BEARER) else ""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise _error(401, "unauthorized", "an agent token is needed: Authorization: Bearer …")
    verdict = await request.app[keys.TOKENS].check(token)
    if verdict == "unavailable":
        raise _error(503, "token_check_unavailable", "the master queue cannot be reached")
    if verdict != "ok":
        raise _error(401, "unauthorized", "invalid or non-agent token")


async def _body(request: web.Request, model: type[M]) -> M:
    try:
        raw = await request.read()
        return model.model_validate_json(raw)
    except ValidationError as e:
        fields = [{"loc": list(d["loc"]), "msg": d["msg"]} for d in e.errors(include_url=False)]
        raise _error(400, "invalid_body", "the body does not match", fields=fields) from e


def _lifetime_s(broker: Broker, slot: SlotDescription) -> int:
    """Below the slot's remaining TTL (margin) and no longer than the cluster lives."""
    margin = broker.settings.lifetime_margin_s
    cluster_left = broker.expires_s - time.time()
    return max(1, math.floor(min(slot.ttl_s - margin, cluster_left)))


def _grant(broker: Broker, place: Place, slot: SlotDescription) -> dict[str, Any]:
    if place.grant:
        return place.grant
    creds = broker.tls.worker(place.name)
    worker = broker.request.worker
    grant = AttachGrant(
        name=place.name,
        request_id=broker.record.id,
        scheduler_address=broker.scheduler.address,
        tls_ca=broker.tls.ca.cert_pem,
        tls_cert=creds.cert_pem,
        tls_key=creds.key_pem,
        nthreads=worker.cores,
        memory_limit=f"{worker.memory_mb}MiB",
        memory_limit_mb=worker.memory_mb,
        lifetime_s=_lifetime_s(broker, slot),
        attach_timeout_s=broker.places.attach_timeout_s,
    )
    place.grant = grant.model_dump()
    return place.grant


async def attach(request: web.Request) -> web.Response:
    """``POST /v1/attach``: grant one place to an agent's slot, or say why not."""
    started = time.perf_counter()
    metrics = request.app[keys.METRICS]
    try:
        await _authorize(request)
    except web.HTTPUnauthorized:
        metrics.attaches.labels(outcome="unauthorized").inc()
        raise
    slot = await _body(request, SlotDescription)
    broker = request.app[keys.BROKER]
    problems = unmet(broker.request, slot, broker.settings.min_slot_ttl_s)
    if problems:
        metrics.attaches.labels(outcome="requirements").inc()
        raise _error(409, "conflict", "; ".join(problems), reason="requirements", unmet=problems)
    # From here to the grant: no await, so the check and the reservation are one step.
    try:
        place = broker.places.reserve(slot)
    except NoPlace as e:
        metrics.attaches.labels(outcome=e.reason).inc()
        raise _error(409, "conflict", f"the cluster is {e.reason}", reason=e.reason) from e
    body = _grant(broker, place, slot)
    broker.changed()
    metrics.attaches.labels(outcome="granted").inc()
    metrics.attach_seconds.observe(time.perf_counter() - started)
    return web.json_response(body)


async def detach(request: web.Request) -> web.Response:
    """``POST /v1/detach``: give back a reservation, or retire the agent's running worker."""
    await _authorize(request)
    body = await _body(request, DetachBody)
    broker = request.app[keys.BROKER]
    if broker.places.release(body.name, body.agent_id) is not None:
        broker.changed()
        return web.json_response({"name": body.name, "released": "reservation"})
    place = broker.places.get(body.name)
    if place is None or place.agent_id != body.agent_id or place.address is None:
        raise _error(404, "not_found", f"agent {body.agent_id!r} holds no place {body.name!r}")
    broker.spawn(
        broker.scheduler.retire_workers(workers=[place.address], close_workers=True),
        "broker-detach",
    )
    return web.json_response({"name": body.name, "released": "worker"})
