"""HTTP API of the master queue (JSON; bearer tokens). Server-request, token and health views.

Batch-job and match views are in :mod:`podgrid.masterqueue.views_jobs`. Every call except
``/healthz`` and ``/metrics`` needs ``Authorization: Bearer <token>``. Times are ISO 8601
UTC strings.

Errors (every 4xx/5xx)::

    {"error": "<code>", "message": "<text>", "fields": [{"loc": [...], "msg": "...", ...}]}

Codes: 400 ``bad_json`` (fields[0] has line/column), ``invalid_body`` (pydantic: loc/msg/type per
field), ``invalid_request_config`` (loc=[field as written], msg, line, column per problem),
``invalid_query``, ``invalid_header``, ``bad_encoding``; 401 ``unauthorized`` (missing or unknown
token); 403 ``forbidden`` (role not allowed); 404 ``not_found`` (no such record — ALSO another
user's request or job: existence is never revealed to other users); 409 ``illegal_transition``,
``stale_lease``, ``idempotency_conflict`` (same key, different body); 413 ``body_too_large``;
503 ``database_unavailable``; 500 ``internal_error`` (logged with the ``X-Request-Id``).

Records::

    Request = {"id", "owner", "name", "state", "reason", "request": {ServerRequest as JSON:
               name, min_workers, max_workers, max_wait_s, ttl_s, idle_timeout_s (null: the site's
               podServerIdleTimeout), adaptive,
               engine, worker: {cores, memory_mb, packages, sites}}, "created_at", "updated_at",
               "broker_token_id", "master_host", "address", "workers": [{"name", "host",
               "site", "agent_id", "attached_at", "startup_s"}], "worker_count",
               "connection": null (never included here; see /connection), "last_heartbeat"}
    Job = {"id", "owner", "spec": {JobSpec}, "state", "attempts", "agent_id",
           "lease_expires_at", "exit_code", "created_at", "updated_at"}
    JobSpec = {"command": [argv, ≥1], "env": {}, "cores": 1, "memory_mb": 1024, "ttl_s": 3600,
               "packages": [], "sites": [], "priority": 0, "max_attempts": 3}

Endpoints (role; admin may do everything):

- ``POST /v1/requests`` (user). Body: the request config as TOML, JDL or JSON; the format comes
  from Content-Type (``application/toml``, ``text/x-jdl``/``application/jdl``,
  ``application/json``) or is sniffed. Optional ``Idempotency-Key`` header: a retried submit
  with the same key and body returns the same request. → 201 Request.
- ``GET /v1/requests?state=A,B&limit=50&after=ID`` (user: own; admin: all) →
  200 ``{"requests": [Request], "next": ID | null}``; pass ``next`` as ``after`` for the next page.
- ``GET /v1/requests/{id}`` (owner, admin, or the request's broker) →
  200 Request + ``"timeline": [{"state", "reason", "at"}]`` (oldest first).
- ``GET /v1/requests/{id}/connection`` (owner only; an admin gets 403) →
  200 ``{"id", "state", "address", "connection": {"address", "tls_ca", "attach_url",
  "expires", …} | null}`` (null until the broker sent it). Never a private key.
- ``POST /v1/requests/{id}/connection`` (owner only). Body ``{"csr": PEM}`` (a CSR for a key
  the owner made, EC or RSA) → 200 the same, with ``connection.tls_client_cert`` signed by
  the cluster's broker for that key (``owner:<user>``, client use only; nothing is stored);
  400 ``bad_csr``; 409 ``request_final``; 502/503 when the broker cannot sign.
- ``DELETE /v1/requests/{id}`` (owner) → 200 Request (CANCELLED); 409 when already final.
- ``POST /v1/requests/{id}/state`` (the broker token made for this request). Body:
  ``{"state": "PUBLISHING"|"READY"|"FULL"|"DONE"|"FAILED"|…, "workers": [Worker],
  "address": str | null, "connection": {…} | null}`` → 200 ``{"id", "state", "reason",
  "cancel": bool}``; ``cancel: true`` means the request is final (cancelled, expired, failed,
  done): the broker must shut down. 409 for a move that is not legal from a live state.
  That answer is the broker token's last: it is revoked as it is given (and it expires 60 s
  after the request's end in any case), so every later call with it is a 401.
- ``POST /v1/jobs`` (user). Body: JobSpec; ``Idempotency-Key`` honoured. → 201 Job.
- ``GET /v1/jobs?state=&limit=&after=`` (user: own; admin: all) → ``{"jobs": [Job], "next"}``.
- ``GET /v1/jobs/{id}`` (owner) → 200 Job + ``"history": [{"state", "agent_id", "reason", "at"}]``.
- ``DELETE /v1/jobs/{id}`` (owner) → 200 Job (KILLED); 409 when already final.
- ``POST /v1/match`` (agent). Body: ``{"agent_id", "site", "ce", "host", "cores", "memory_mb",
  "ttl_s", "packages"}`` → 200 ``{"job": Job, "lease_token": str, "lease_s": float}`` | 204.
- ``POST /v1/jobs/{id}/heartbeat`` (agent). Body ``{"lease_token", "state": "STARTED"|"RUNNING"}``
  → 200 ``{"id", "lease_expires_at"}``; 409 ``stale_lease`` once the lease is lost.
- ``POST /v1/jobs/{id}/finish`` (agent). Body ``{"lease_token", "exit_code": int}`` → 200 Job
  (DONE if 0 else ERROR_E; repeating the same finish is harmless); 409 ``stale_lease``.
- ``POST /v1/tokens`` (admin). Body ``{"role": "user"|"agent"|"broker"|"admin", "name",
  "request_id": int | null, "expires_in_s": int | null}`` → 201 ``{"token", "role", "name",
  "request_id", "id", "expires"}`` (the token is shown once).
- ``GET /v1/tokens?name=&limit=&after=`` (admin) → 200 ``{"tokens": [{"id", "role", "name",
  "request_id", "created", "expires", "revoked"}], "next"}`` (never a token or its digest).
- ``DELETE /v1/tokens/{id}`` (admin) → 200 that token's record with ``revoked`` set; every
  later call with it is a 401 (at once in this process, within the token cache TTL in others).
- ``GET /v1/whoami`` (any role) → 200 ``{"name", "role", "request_id"}`` (the caller's token).
- ``GET /healthz`` → 200 ``{"status": "ok"}`` (503 when the database is down);
  ``GET /metrics`` → Prometheus text.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from podgrid.config.request import RequestFormat, parse_request
from podgrid.config.request_errors import RequestError
from podgrid.errors import http_error
from podgrid.masterqueue import keys
from podgrid.masterqueue.auth import ensure_owner, owner_filter, principal, require
from podgrid.masterqueue.broker_ca import server_name
from podgrid.masterqueue.edge import (
    body_text,
    idempotency_key,
    json_body,
    page,
    page_params,
    path_id,
    state_params,
    wait_params,
)
from podgrid.masterqueue.errors import IllegalTransition
from podgrid.masterqueue.http_errors import request_config_error
from podgrid.masterqueue.models import Principal
from podgrid.masterqueue.signing import load_sign_key, sign_owner_csr, sign_secret
from podgrid.masterqueue.watch import MAX_WAIT_S, RECHECK_S, request_version
from podgrid.protocol import (
    REQUEST_FINAL,
    ConnectionReply,
    ConnectionRequest,
    RequestRecord,
    RequestState,
    StateReply,
    StateReport,
    TokenCreate,
    TokenCreated,
    WhoAmI,
)

_FORMATS: dict[str, RequestFormat] = {
    "application/toml": "toml",
    "text/toml": "toml",
    "application/x-toml": "toml",
    "application/jdl": "jdl",
    "text/jdl": "jdl",
    "text/x-jdl": "jdl",
    "application/json": "json",
}
REQUEST_SOURCE = "request"  # how errors name the submitted text


def request_json(record: RequestRecord) -> dict[str, Any]:
    """A request as the API shows it (never with the connection secrets)."""
    return record.public().model_dump(mode="json")


async def submit_request(request: web.Request) -> web.Response:
    """``POST /v1/requests``: parse the config, store a WAITING request, wake the launcher."""
    who = await require(request, "user")
    key = idempotency_key(request)
    text = await body_text(request)
    settings = request.app[keys.SETTINGS]
    try:
        parsed = parse_request(
            text,
            fmt=_FORMATS.get(request.content_type),
            source=REQUEST_SOURCE,
            max_workers_cap=settings.max_workers_cap,
        )
    except RequestError as e:
        raise request_config_error(e) from e
    record = await request.app[keys.STORE].submit_request(who.name, parsed, text, key)
    request.app[keys.RUNTIME].wake_launcher.set()
    return web.json_response(
        request_json(record), status=201, headers={"Location": f"/v1/requests/{record.id}"}
    )


async def list_requests(request: web.Request) -> web.Response:
    """``GET /v1/requests``: the caller's requests (an admin's: everyone's), a page at a time."""
    who = await require(request, "user")
    limit, after = page_params(request)
    states = state_params(request, RequestState)
    records = await request.app[keys.STORE].list_requests(
        owner=owner_filter(who), states=states, limit=limit, after_id=after
    )
    return web.json_response(page([request_json(r) for r in records], limit, "requests"))


async def _visible_request(request: web.Request, who: Principal, request_id: int) -> RequestRecord:
    if who.role == "agent":
        raise http_error(403, "forbidden", "role 'agent' may not read requests")
    record = await request.app[keys.STORE].get_request(request_id)
    if who.role == "broker":
        if who.request_id != request_id:
            raise http_error(404, "not_found", f"request {request_id} not found")
        return record
    ensure_owner(who, record.owner, "request", request_id)
    return record


async def get_request(request: web.Request) -> web.Response:
    """``GET /v1/requests/{id}[?wait=S&since=V]``: the request with its timeline and workers.

    With ``wait``, an answer whose ``version`` would still be ``since`` is held back until
    the request changes or ``wait`` seconds pass (a long-poll, :mod:`.watch`).
    """
    who = await principal(request)
    request_id = path_id(request)
    wait_s, since = wait_params(request, MAX_WAIT_S)
    store = request.app[keys.STORE]
    deadline = time.monotonic() + wait_s
    while True:
        record = await _visible_request(request, who, request_id)
        events = await store.request_events(request_id)
        version = request_version(record, events)
        left = deadline - time.monotonic()
        if since is None or version != since or left <= 0 or record.state in REQUEST_FINAL:
            break
        await store.watch.wait(request_id, min(left, RECHECK_S))
    body = request_json(record)
    body["timeline"] = [e.model_dump(mode="json") for e in events]
    body["version"] = version
    return web.json_response(body)


async def _owned_request(request: web.Request, who: Principal, request_id: int) -> RequestRecord:
    record = await request.app[keys.STORE].get_request(request_id)
    if record.owner != who.name:
        if who.role == "admin":
            raise http_error(403, "forbidden", "the connection is shown to the owner only")
        raise http_error(404, "not_found", f"request {request_id} not found")
    return record


def _broker_trust(request: web.Request, record: RequestRecord) -> dict[str, str]:
    """How the owner checks its broker's HTTPS server: this master queue's broker CA and name."""
    return {
        "broker_ca": request.app[keys.BROKER_CA].cert_pem,
        "broker_name": server_name(record.id),
    }


async def get_connection(request: web.Request) -> web.Response:
    """``GET /v1/requests/{id}/connection``: scheduler address and cluster CA, owner only."""
    who = await require(request, "user")
    record = await _owned_request(request, who, path_id(request))
    info = record.connection
    if info is not None:  # the owner's certificate comes only from POST, for its own key
        info = info.model_copy(
            update={
                "tls_client_cert": None,
                "tls_client_key": None,
                **_broker_trust(request, record),
            }
        )
    reply = ConnectionReply(
        id=record.id, state=record.state, address=record.address, connection=info
    )
    return _json(reply)


async def post_connection(request: web.Request) -> web.Response:
    """``POST /v1/requests/{id}/connection``: the owner's CSR signed by the cluster's broker.

    The master queue holds no cluster key: it forwards the CSR to the broker's ``/v1/sign``
    with the request's sign secret (re-derived, never stored) and returns the certificate
    with the address and CA. Nothing of it is stored. ``connection`` is null (as for ``GET``)
    until the broker reported; 409 once the request is final.
    """
    who = await require(request, "user")
    record = await _owned_request(request, who, path_id(request))
    body = await json_body(request, ConnectionRequest)
    if record.state in REQUEST_FINAL:
        raise http_error(409, "request_final", f"request {record.id} is {record.state.value}")
    info = record.connection
    if info is None or info.attach_url is None:
        return _json(ConnectionReply(id=record.id, state=record.state, address=record.address))
    key = load_sign_key(request.app[keys.SETTINGS].sign_key_path)
    signed = await sign_owner_csr(
        info.attach_url,
        sign_secret(key, record.id),
        body.csr,
        broker_ca=request.app[keys.BROKER_CA].cert_pem,
        server_name=server_name(record.id),
    )
    connection = info.model_copy(
        update={
            "tls_client_cert": signed.tls_client_cert,
            "tls_client_key": None,
            **_broker_trust(request, record),
        }
    )
    reply = ConnectionReply(
        id=record.id, state=record.state, address=record.address, connection=connection
    )
    return _json(reply)


async def cancel_request(request: web.Request) -> web.Response:
    """``DELETE /v1/requests/{id}``: CANCELLED; the broker learns it from its next report."""
    who = await require(request, "user")
    request_id = path_id(request)
    store = request.app[keys.STORE]
    record = await store.cancel_request(request_id, owner_filter(who))
    request.app[keys.RUNTIME].wake_launcher.set()
    return web.json_response(request_json(record))


def _json(message: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(message.model_dump(mode="json"), status=status)


def _report_answer(record: RequestRecord) -> web.Response:
    cancel = record.state in REQUEST_FINAL
    return _json(StateReply(id=record.id, state=record.state, reason=record.reason, cancel=cancel))


async def _retire_broker_token(request: web.Request, who: Principal) -> None:
    """The broker is being told its request ended: its token has done its last job."""
    if who.role == "broker":
        await request.app[keys.STORE].revoke_token(who.token_id)
        request.app[keys.TOKENS].forget(who.token_id)


async def broker_state(request: web.Request) -> web.Response:
    """``POST /v1/requests/{id}/state``: a broker heartbeat; answers whether it must stop."""
    who = await require(request, "broker")
    request_id = path_id(request)
    if who.role == "broker" and who.request_id != request_id:
        raise http_error(403, "forbidden", "this broker token belongs to another request")
    report = await json_body(request, StateReport)
    store = request.app[keys.STORE]
    current = await store.get_request(request_id)
    if current.state in REQUEST_FINAL:
        await _retire_broker_token(request, who)
        return _report_answer(current)
    try:
        record = await store.broker_report(
            request_id, report.state, report.workers, report.address, report.connection
        )
    except IllegalTransition:
        record = await store.get_request(request_id)
        if record.state not in REQUEST_FINAL:
            raise
    if record.state in REQUEST_FINAL:
        await _retire_broker_token(request, who)
    return _report_answer(record)


async def create_token(request: web.Request) -> web.Response:
    """``POST /v1/tokens``: issue a token (admin only); the plaintext is returned once."""
    await require(request, "admin")
    body = await json_body(request, TokenCreate)
    if body.request_id is not None and body.role != "broker":
        raise http_error(
            400,
            "invalid_body",
            "request_id: only broker tokens belong to a request",
            [{"loc": ["request_id"], "msg": "only broker tokens belong to a request"}],
        )
    token, info = await request.app[keys.STORE].issue_token(
        body.role, body.name, body.request_id, body.expires_in_s
    )
    created = TokenCreated(
        token=token,
        role=info.role,
        name=info.name,
        request_id=info.request_id,
        id=info.id,
        expires=info.expires,
    )
    return _json(created, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    """``GET /v1/tokens?name=&limit=&after=``: token records (admin only; never a token)."""
    await require(request, "admin")
    limit, after = page_params(request)
    name = request.query.get("name") or None
    found = await request.app[keys.STORE].list_tokens(limit, after, name)
    items = [t.model_dump(mode="json") for t in found]
    return web.json_response(page(items, limit, "tokens"))


async def revoke_token(request: web.Request) -> web.Response:
    """``DELETE /v1/tokens/{id}``: revoke a token at once (admin only; repeating is harmless).

    The entry in this process's token cache goes too, so the very next call with the token
    is a 401 here; other master-queue processes notice within their cache TTL.
    """
    await require(request, "admin")
    token_id = path_id(request)
    info = await request.app[keys.STORE].revoke_token(token_id)
    request.app[keys.TOKENS].forget(token_id)
    return web.json_response(info.model_dump(mode="json"))


async def whoami(request: web.Request) -> web.Response:
    """``GET /v1/whoami``: who the bearer token belongs to (brokers check agent tokens with it)."""
    who = await principal(request)
    return _json(WhoAmI(name=who.name, role=who.role, request_id=who.request_id))


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: ok when the database answers."""
    await request.app[keys.STORE].has_tokens()
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text, with the by-state gauges refreshed first."""
    app_metrics = request.app[keys.METRICS]
    app_metrics.set_state_counts(*await request.app[keys.STORE].state_counts())
    resp = web.Response(body=generate_latest(app_metrics.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
