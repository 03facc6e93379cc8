"""Talking to a broker's attach API (HTTPS; the messages are :mod:`podgrid.protocol`'s).

Every call carries a :class:`BrokerPass` from the master queue (:mod:`podgrid.jobagent.vouch`):
the attach ticket shown instead of the agent's token, and the TLS context trusting the broker
CA alone with the name the broker's certificate must have, so a call reaches the genuine
broker of that request or fails before anything is sent.

``POST {Address}/v1/attach`` with the slot and a CSR → a :class:`WorkerGrant` (worker name,
scheduler address, the worker certificate and cluster CA, nthreads, memory limit, lifetime,
and the private key this agent made for the CSR, which never left this process) or
:class:`AttachRefused` (409 ``full`` / ``closed`` / ``requirements``, 401, or a broker that
cannot be reached). ``POST {Address}/v1/detach`` gives the place back.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class BrokerPass:
    """What an agent needs to talk to one broker: its ticket, and how to know the broker."""

    ticket: str = field(repr=False)
    expires: int  # epoch seconds
    server_name: str  # the name in the broker's certificate (request-<id>.brokers.podgrid)
    context: ssl.SSLContext = field(repr=False)  # trusts the master queue's broker CA alone


def _headers(broker: BrokerPass) -> dict[str, str]:
    return {"Authorization": f"Bearer {broker.ticket}"}


async def attach(
    session: aiohttp.ClientSession, address: str, broker: BrokerPass, slot: SlotDescription
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
            url,
            json=body.model_dump(mode="json"),
            timeout=timeout,
            headers=_headers(broker),
            ssl=broker.context,
            server_hostname=broker.server_name,
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
    session: aiohttp.ClientSession, address: str, broker: BrokerPass, agent_id: str, name: str
) -> bool:
    """Give the place back (best effort: False when the broker is gone or does not know it)."""
    url = base_url(address) + "/v1/detach"
    timeout = aiohttp.ClientTimeout(total=ATTACH_TIMEOUT_S)
    try:
        async with session.post(
            url,
            json=DetachRequest(agent_id=agent_id, name=name).model_dump(),
            timeout=timeout,
            headers=_headers(broker),
            ssl=broker.context,
            server_hostname=broker.server_name,
        ) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def alive(session: aiohttp.ClientSession, address: str, broker: BrokerPass) -> bool:
    """Whether the broker still answers ``GET /healthz``."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    url = base_url(address) + "/healthz"
    try:
        async with session.get(
            url, timeout=timeout, ssl=broker.context, server_hostname=broker.server_name
        ) as resp:
            return resp.status < 500
    except (aiohttp.ClientError, TimeoutError):
        return False
