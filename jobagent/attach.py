"""Talking to a broker's attach API (HTTP; the messages are :mod:`podgrid.protocol`'s).

``POST {Address}/v1/attach`` with the slot and a CSR → a :class:`WorkerGrant` (worker name,
scheduler address, the worker certificate and cluster CA, nthreads, memory limit, lifetime,
and the private key this agent made for the CSR, which never left this process) or
:class:`AttachRefused` (409 ``full`` / ``closed`` / ``requirements``, 401, or a broker that
cannot be reached). ``POST {Address}/v1/detach`` gives the place back.
"""

from __future__ import annotations

from typing import Final

import aiohttp
from pydantic import Field, ValidationError

from podgrid.errors import PodGridError
from podgrid.protocol import AttachGrant, AttachRequest, DetachRequest, SlotDescription
from podgrid.protocol.csr import csr_for, new_private_key
from podgrid.web import decode_error

ATTACH_TIMEOUT_S: Final = 10.0  # seconds for one attach or detach exchange
PROBE_TIMEOUT_S: Final = 2.0  # seconds for one broker liveness probe
_REASONS: Final = {401: "unauthorized", 409: "conflict"}


class AttachRefused(PodGridError):
    """The broker said no (``reason``: full, closed, requirements, unauthorized, unreachable)."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.status = status


class WorkerGrant(AttachGrant):
    """A broker's grant together with the worker's private key, made here for the CSR.

    ``tls_key`` is excluded from every dump: it is written only to the worker's 0600 key
    file (:func:`podgrid.jobagent.worker.write_tls`), never sent, never logged.
    """

    tls_key: str = Field(exclude=True, repr=False)


def base_url(address: str) -> str:
    """The broker's base URL from its published ``Address``."""
    address = address.rstrip("/")
    suffix = "/v1/attach"
    return address[: -len(suffix)] if address.endswith(suffix) else address


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def attach(
    session: aiohttp.ClientSession, address: str, token: str, slot: SlotDescription
) -> WorkerGrant:
    """Ask for a place in the broker's cluster; :class:`AttachRefused` when there is none.

    A fresh EC P-256 key is made for every attach (a fraction of a millisecond); only its CSR
    is sent.
    """
    url = base_url(address) + "/v1/attach"
    timeout = aiohttp.ClientTimeout(total=ATTACH_TIMEOUT_S)
    key_pem = new_private_key()
    body = AttachRequest(**slot.model_dump(), csr=csr_for(key_pem))
    try:
        async with session.post(
            url, json=body.model_dump(mode="json"), headers=_headers(token), timeout=timeout
        ) as resp:
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as e:
        raise AttachRefused("unreachable", str(e) or type(e).__name__) from e
    if status == 200:
        try:
            grant = AttachGrant.model_validate_json(text)
        except ValidationError as e:
            raise AttachRefused("bad_answer", str(e), status) from e
        return WorkerGrant(**grant.model_dump(), tls_key=key_pem)
    error = decode_error(status, "", text, "broker")
    reason = str(error.extra.get("reason") or _REASONS.get(status, f"http_{status}"))
    raise AttachRefused(reason, error.message, status)


async def detach(
    session: aiohttp.ClientSession, address: str, token: str, agent_id: str, name: str
) -> bool:
    """Give the place back (best effort: False when the broker is gone or does not know it)."""
    url = base_url(address) + "/v1/detach"
    timeout = aiohttp.ClientTimeout(total=ATTACH_TIMEOUT_S)
    try:
        async with session.post(
            url,
            json=DetachRequest(agent_id=agent_id, name=name).model_dump(),
            headers=_headers(token),
            timeout=timeout,
        ) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def alive(session: aiohttp.ClientSession, address: str) -> bool:
    """Whether the broker still answers ``GET /healthz``."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    try:
        async with session.get(base_url(address) + "/healthz", timeout=timeout) as resp:
            return resp.status < 500
    except (aiohttp.ClientError, TimeoutError):
        return False
