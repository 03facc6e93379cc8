"""The per-request sign secret: how the master queue gets its owner's CSR signed by a broker.

The master queue holds no cluster CA key (each broker made its own), yet the owner asks the
master queue for a certificate (``POST /v1/requests/{id}/connection``). So the launcher gives
every broker a secret of its request: ``HMAC-SHA256(key, "podgrid-sign:<request id>")`` under
the master queue's sign key (32 random bytes, hex, in ``<state dir>/sign.key``, mode 0600,
made on first use; several master queues on one database must share that file, see
``MasterQueueSettings.sign_key_file``). The broker finds it in ``PODGRID_SIGN_SECRET`` and
accepts ``POST /v1/sign`` only with it; the master queue re-derives it from the request id
whenever it forwards an owner's CSR. Nothing of it is ever stored in the database: a stolen
``masterqueue.db`` signs nothing. One request's secret opens only that request's broker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Final

import aiohttp
from pydantic import ValidationError

from podgrid.config import environment
from podgrid.config.runtime import create_private_once
from podgrid.errors import BadRequest, PodGridError, ServerError, ServiceUnavailable
from podgrid.https import pinned_context
from podgrid.protocol import SignReply, SignRequest
from podgrid.web import decode_error

SIGN_SECRET_ENV: Final = environment.SIGN_SECRET
KEY_BYTES: Final = 32
SIGN_TIMEOUT_S: Final = 10.0  # seconds for the broker to sign one CSR
_LABEL: Final = "podgrid-sign:"
_TICKET_LABEL: Final = "podgrid-attach|"
TICKET_TTL_S: Final = 300  # seconds an attach ticket is good for


class SignKeyError(PodGridError, OSError):
    """The sign key file exists but is not a key (wrong length, not hex)."""


def load_sign_key(path: Path) -> bytes:
    """The master queue's sign key from ``path``, created (0600) when it does not exist yet
    (:func:`podgrid.config.runtime.create_private_once`: concurrent starts share one key)."""
    create_private_once(path, lambda: secrets.token_hex(KEY_BYTES) + "\n")
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as e:
        raise SignKeyError(f"{path}: not a hex sign key") from e
    if len(key) != KEY_BYTES:
        raise SignKeyError(f"{path}: a sign key has {KEY_BYTES} bytes, this one {len(key)}")
    return key


def sign_secret(key: bytes, request_id: int) -> str:
    """The sign secret of request ``request_id`` (64 hex characters)."""
    message = f"{_LABEL}{request_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def broker_base_url(attach_url: str) -> str:
    """The broker's base URL from the attach URL it reported (https only: brokers serve TLS)."""
    url = attach_url.rstrip("/")
    suffix = "/v1/attach"
    url = url[: -len(suffix)] if url.endswith(suffix) else url
    if not url.startswith("https://"):
        raise BadRequest(f"the broker reported an attach URL that is not https: {url!r}")
    return url


async def sign_owner_csr(
    attach_url: str, secret: str, csr: str, *, broker_ca: str, server_name: str
) -> SignReply:
    """Have the request's broker sign the owner's CSR (``POST /v1/sign`` with the secret).

    The broker must prove it is ``server_name`` with a certificate of ``broker_ca`` before it
    sees the secret. Its refusal of the CSR comes back as its :class:`BadRequest` (the
    owner's mistake); a broker that cannot be reached or answers otherwise is a 502 / 503 here.
    """
    url = broker_base_url(attach_url) + "/v1/sign"
    body = SignRequest(csr=csr).model_dump()
    headers = {"Authorization": f"Bearer {secret}"}
    timeout = aiohttp.ClientTimeout(total=SIGN_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                url,
                json=body,
                headers=headers,
                ssl=pinned_context(broker_ca),
                server_hostname=server_name,
            ) as resp,
        ):
            status, text, reason = resp.status, await resp.text(), resp.reason or ""
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ServiceUnavailable(
            f"the cluster's broker cannot be reached to sign: {e or type(e).__name__}",
            code="broker_unreachable",
        ) from e
    if status == 200:
        try:
            return SignReply.model_validate_json(text)
        except ValidationError as e:
            raise ServerError("the broker's signature answer is malformed", status=502) from e
    error = decode_error(status, reason, text, "broker")
    if isinstance(error, BadRequest):
        raise BadRequest(error.message, code=error.code, fields=error.fields)
    raise ServerError(f"the broker did not sign: {error.message}", code="sign_failed", status=502)


def _ticket_mac(secret: str, agent: str, expires: int) -> str:
    message = f"{_TICKET_LABEL}{agent}|{expires}".encode("utf-8", "surrogateescape")
    return hmac.new(secret.encode("ascii"), message, hashlib.sha256).hexdigest()


def attach_ticket(secret: str, agent: str, expires: int) -> str:
    """An attach ticket for ``agent`` at the broker holding ``secret``, valid until ``expires``.

    ``<agent name, base64url>.<expires>.<HMAC>``: the broker checks it with its sign secret,
    with no master-queue round trip, and learns who attaches. A ticket opens one request's
    broker only, for a few minutes; the agent's token itself never reaches a broker.
    """
    name = base64.urlsafe_b64encode(agent.encode("utf-8", "surrogateescape")).decode()
    return f"{name.rstrip('=')}.{expires}.{_ticket_mac(secret, agent, expires)}"


def check_ticket(secret: str, ticket: str, now: float) -> str | None:
    """The agent a valid, unexpired ``ticket`` was made for; None otherwise (never raises)."""
    parts = ticket.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    try:
        padded = parts[0] + "=" * (-len(parts[0]) % 4)
        agent = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        return None
    expires = int(parts[1])
    if expires < now or not hmac.compare_digest(parts[2], _ticket_mac(secret, agent, expires)):
        return None
    return agent
