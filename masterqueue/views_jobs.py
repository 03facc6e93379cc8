"""HTTP views of batch jobs and the matcher (bodies: :mod:`podgrid.masterqueue.views`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from podgrid.masterqueue import keys
from podgrid.masterqueue.auth import ensure_owner, owner_filter, require
from podgrid.masterqueue.edge import (
    idempotency_key,
    json_body,
    page,
    page_params,
    path_id,
    state_params,
)
from podgrid.protocol import (
    JobFinish,
    JobHeartbeat,
    JobRecord,
    JobRelease,
    JobSpec,
    JobState,
    LeaseRenewed,
    SlotDescription,
)


def job_json(record: JobRecord) -> dict[str, Any]:
    """A job as the API shows it."""
    return record.model_dump(mode="json")


async def submit_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs``: store a WAITING batch job (``Idempotency-Key`` honoured)."""
    who = await require(request, "user")
    key = idempotency_key(request)
    spec = await json_body(request, JobSpec)
    record = await request.app[keys.STORE].submit_job(who.name, spec, key)
    return web.json_response(
        job_json(record), status=201, headers={"Location": f"/v1/jobs/{record.id}"}
    )


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /v1/jobs``: the caller's jobs (an admin's: everyone's), a page at a time."""
    who = await require(request, "user")
    limit, after = page_params(request)
    states = state_params(request, JobState)
    records = await request.app[keys.STORE].list_jobs(
        owner=owner_filter(who), states=states, limit=limit, after_id=after
    )
    return web.json_response(page([job_json(r) for r in records], limit, "jobs"))


async def get_job(request: web.Request) -> web.Response:
    """``GET /v1/jobs/{id}``: the job and its history (owner or admin; others get 404)."""
    who = await require(request, "user")
    job_id = path_id(request)
    store = request.app[keys.STORE]
    record = await store.get_job(job_id)
    ensure_owner(who, record.owner, "job", job_id)
    body = job_json(record)
    body["history"] = [e.model_dump(mode="json") for e in await store.job_events(job_id)]
    return web.json_response(body)


async def kill_job(request: web.Request) -> web.Response:
    """``DELETE /v1/jobs/{id}``: KILLED; the agent's next heartbeat is refused."""
    who = await require(request, "user")
    record = await request.app[keys.STORE].kill_job(path_id(request), owner_filter(who))
    return web.json_response(job_json(record))


async def match(request: web.Request) -> web.Response:
    """``POST /v1/match``: claim the best job the slot can run; 204 when none fits."""
    await require(request, "agent")
    slot = await json_body(request, SlotDescription)
    app = request.app
    claim = await app[keys.STORE].claim_job(slot, app[keys.SETTINGS].lease_s)
    if claim is None:
        app[keys.METRICS].matches.labels(result="empty").inc()
        return web.Response(status=204)
    app[keys.METRICS].matches.labels(result="claimed").inc()
    return web.json_response(claim.model_dump(mode="json"))


async def heartbeat_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{id}/heartbeat``: renew the lease (409 ``stale_lease`` once lost)."""
    await require(request, "agent")
    job_id = path_id(request)
    body = await json_body(request, JobHeartbeat)
    expires = await request.app[keys.STORE].heartbeat_job(
        job_id, body.lease_token, JobState(body.state)
    )
    renewed = LeaseRenewed(id=job_id, lease_expires_at=expires)
    return web.json_response(renewed.model_dump(mode="json"))


async def finish_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{id}/finish``: DONE or ERROR_E under the agent's lease."""
    await require(request, "agent")
    job_id = path_id(request)
    body = await json_body(request, JobFinish)
    record = await request.app[keys.STORE].finish_job(job_id, body.lease_token, body.exit_code)
    return web.json_response(job_json(record))


async def release_job(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{id}/release``: back to WAITING under the agent's lease (it shut down).

    The attempt is not counted against the job (up to a few releases per job); 409
    ``stale_lease`` once the lease is lost.
    """
    await require(request, "agent")
    job_id = path_id(request)
    body = await json_body(request, JobRelease)
    record = await request.app[keys.STORE].release_job(job_id, body.lease_token, body.reason)
    return web.json_response(job_json(record))
