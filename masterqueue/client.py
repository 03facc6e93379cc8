"""The async HTTP client of the master queue, used by the broker, the job agents and the CLI.

:class:`MasterQueueClient` has one typed method per endpoint of the master queue's API and
returns the models of :mod:`podgrid.protocol`, the same ones the service answers with. An
error answer becomes the :class:`podgrid.errors.ServiceError` subclass for its status
(decoded by :func:`podgrid.web.decode_error`: 401 ``Unauthorized``, 403 ``Forbidden``,
404 ``NotFound``, 409 ``Conflict``, 503 ``ServiceUnavailable``, other 4xx ``BadRequest``,
other 5xx ``ServerError``); a service that cannot be reached raises ``Unreachable``.

Retries (``podgrid.config.retry.retry_policy(kind="masterqueue")``) cover connection failures
and 502/503/504, but only where repeating is harmless: reads, cancels and kills (a repeat after
a lost answer gets a 409 saying the record is already final), broker reports, job heartbeats
and finishes (the service treats a repeated finish as harmless), and submissions (which always
carry an ``Idempotency-Key``, generated when not given, so a retried submit creates one
request). ``match`` and ``create_token`` are retried only when the connection could not even
be opened, i.e. nothing reached the service: a repeated match could claim a second job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from podgrid.config.request import RequestFormat, ServerRequest
from podgrid.config.retry import retry_policy
from podgrid.errors import ServerError, ServiceError, Unreachable
from podgrid.https import client_session
from podgrid.protocol import (
    Claim,
    ConnectionInfo,
    ConnectionReply,
    ConnectionRequest,
    JobDetail,
    JobPage,
    JobRecord,
    JobRelease,
    JobSpec,
    JobState,
    LeaseRenewed,
    RequestDetail,
    RequestPage,
    RequestRecord,
    RequestState,
    Role,
    ServerCertificate,
    ServerCertificateRequest,
    ServerList,
    SlotDescription,
    StateReply,
    StateReport,
    TokenCreate,
    TokenCreated,
    WhoAmI,
    WorkerInfo,
)
from podgrid.protocol.api import TokenInfo, TokenPage
from podgrid.web import decode_error

__all__ = ["MasterQueueClient"]

REQUEST_TIMEOUT_S: Final = 10.0  # s, one HTTP exchange
RETRY_ATTEMPTS: Final = 4
RETRY_DEADLINE_S: Final = 20.0  # s, all attempts of one call together
PAGE_SIZE: Final = 100  # records per page when iterating a listing
LONGPOLL_SLACK_S: Final = 10.0  # s, a long-poll's exchange may take this much beyond its wait
MAX_LONGPOLL_S: Final = 15.0  # s, one long-poll asks for at most this (within the retry deadline)
_RETRY_STATUSES: Final = frozenset({502, 503, 504})
_CONTENT_TYPES: Final[dict[str, str]] = {
    "toml": "application/toml",
    "jdl": "text/x-jdl",
    "json": "application/json",
}

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", RequestPage, JobPage)


class MasterQueueClient:
    """An async client of one master queue; use as ``async with MasterQueueClient(url, token)``.

    Pass ``session`` to share an ``aiohttp.ClientSession`` (it is then not closed here).
    """

    def __init__(
        self,
        url: str,
        token: str,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        retry_attempts: int = RETRY_ATTEMPTS,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = retry_attempts

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = client_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- requests -------------------------------------------------------------------------

    async def submit_request(
        self,
        request: str | ServerRequest,
        fmt: RequestFormat | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> RequestRecord:
        """Submit a server request (its TOML/JDL/JSON text, or a parsed model sent as JSON).

        ``fmt`` sets the Content-Type (the service sniffs the format when it is ``None``).
        A retried submit carries the same ``Idempotency-Key`` and so creates one request.
        """
        if isinstance(request, ServerRequest):
            body, fmt = request.model_dump_json(), "json"
        else:
            body = request
        content_type = _CONTENT_TYPES[fmt] if fmt else "text/plain"
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
        }
        data = await self._call(
            "POST", "/v1/requests", data=body.encode(), headers=headers, idempotent=True
        )
        return _model(RequestRecord, data)

    async def get_request(
        self, request_id: int, *, wait_s: float = 0.0, since: str | None = None
    ) -> RequestDetail:
        """One request with its workers and timeline (only the owner's, unless admin).

        With ``wait_s`` and ``since`` (the ``version`` of an earlier answer), a long-poll: the
        answer comes when the request changed, or after ``wait_s`` seconds.
        """
        params: dict[str, str] = {}
        extra: dict[str, Any] = {}
        if wait_s > 0 and since is not None:
            params = {"wait": f"{wait_s:.3f}", "since": since}
            extra["timeout"] = aiohttp.ClientTimeout(total=wait_s + LONGPOLL_SLACK_S)
        data = await self._call(
            "GET", f"/v1/requests/{request_id}", params=params, idempotent=True, **extra
        )
        return _model(RequestDetail, data)

    async def list_requests(
        self,
        states: Sequence[RequestState | str] | None = None,
        *,
        page_size: int = PAGE_SIZE,
        limit: int | None = None,
    ) -> AsyncIterator[RequestRecord]:
        """Iterate over the caller's requests (all users' for an admin), oldest first.

        Follows the service's pagination cursor; ``limit`` caps the total yielded.
        """
        async for page in self._pages("/v1/requests", RequestPage, states, page_size, limit):
            for record in page.requests:
                yield record

    async def connection(self, request_id: int, csr: str | None = None) -> ConnectionReply:
        """The cluster's connection info; owner only. No private key ever comes back.

        Without ``csr``: the scheduler address and the cluster CA (``GET``). With the owner's
        PEM ``csr``: also a client certificate for that CSR's key, signed by the cluster's
        broker (``POST``; signing again is harmless, so it is retried like a read).
        """
        path = f"/v1/requests/{request_id}/connection"
        if csr is None:
            data = await self._call("GET", path, idempotent=True)
        else:
            body = ConnectionRequest(csr=csr).model_dump()
            data = await self._call("POST", path, json=body, idempotent=True)
        return _model(ConnectionReply, data)

    async def cancel_request(self, request_id: int) -> RequestRecord:
        """Cancel one of the caller's requests; the record in its new state."""
        data = await self._call("DELETE", f"/v1/requests/{request_id}", idempotent=True)
        return _model(RequestRecord, data)

    async def report_state(
        self,
        request_id: int,
        state: RequestState | str,
        *,
        workers: Sequence[WorkerInfo] = (),
        address: str | None = None,
        connection: ConnectionInfo | None = None,
    ) -> StateReply:
        """Broker heartbeat/report (broker token of that request); says whether to stop."""
        report = StateReport(
            state=RequestState(state), workers=list(workers), address=address, connection=connection
        )
        data = await self._call(
            "POST",
            f"/v1/requests/{request_id}/state",
            json=report.model_dump(mode="json"),
            idempotent=True,
        )
        return _model(StateReply, data)

    # --- batch jobs -----------------------------------------------------------------------

    async def submit_job(self, spec: JobSpec, *, idempotency_key: str | None = None) -> JobRecord:
        """Submit a batch job; retried safely thanks to the (generated) ``Idempotency-Key``."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        data = await self._call(
            "POST",
            "/v1/jobs",
            json=spec.model_dump(mode="json"),
            headers=headers,
            idempotent=True,
        )
        return _model(JobRecord, data)

    async def get_job(self, job_id: int) -> JobDetail:
        """One batch job with its history (the caller's own, unless admin)."""
        data = await self._call("GET", f"/v1/jobs/{job_id}", idempotent=True)
        return _model(JobDetail, data)

    async def list_jobs(
        self,
        states: Sequence[JobState | str] | None = None,
        *,
        page_size: int = PAGE_SIZE,
        limit: int | None = None,
    ) -> AsyncIterator[JobRecord]:
        """Iterate over the caller's batch jobs, oldest first, following the cursor."""
        async for page in self._pages("/v1/jobs", JobPage, states, page_size, limit):
            for record in page.jobs:
                yield record

    async def kill_job(self, job_id: int) -> JobRecord:
        """Kill one of the caller's jobs; the record in state KILLED."""
        data = await self._call("DELETE", f"/v1/jobs/{job_id}", idempotent=True)
        return _model(JobRecord, data)

    async def match(self, slot: SlotDescription) -> Claim | None:
        """Claim the best job for an agent's slot; ``None`` when nothing fits (204)."""
        data = await self._call("POST", "/v1/match", json=slot.model_dump(mode="json"))
        return None if data is None else _model(Claim, data)

    async def heartbeat_job(
        self, job_id: int, lease_token: str, state: JobState | str = JobState.RUNNING
    ) -> datetime:
        """Renew a job's lease (and move it to STARTED/RUNNING); the new expiry time."""
        body = {"lease_token": lease_token, "state": str(state)}
        data = await self._call("POST", f"/v1/jobs/{job_id}/heartbeat", json=body, idempotent=True)
        return _model(LeaseRenewed, data).lease_expires_at

    async def finish_job(self, job_id: int, lease_token: str, exit_code: int) -> JobRecord:
        """Report a job's exit code (DONE when 0, else ERROR_E); refused if the lease was lost."""
        body = {"lease_token": lease_token, "exit_code": exit_code}
        data = await self._call("POST", f"/v1/jobs/{job_id}/finish", json=body, idempotent=True)
        return _model(JobRecord, data)

    async def release_job(self, job_id: int, lease_token: str, reason: str) -> JobRecord:
        """Give a job back to the queue (WAITING, the attempt not counted): its agent stops.

        Retried like finish: a repeat after a lost answer gets 409 (the lease is gone).
        """
        body = JobRelease(lease_token=lease_token, reason=reason).model_dump(mode="json")
        data = await self._call("POST", f"/v1/jobs/{job_id}/release", json=body, idempotent=True)
        return _model(JobRecord, data)

    # --- admin and health -----------------------------------------------------------------

    async def create_token(
        self,
        role: Role,
        name: str,
        request_id: int | None = None,
        expires_in_s: int | None = None,
    ) -> str:
        """Issue a token (admin only); the plaintext, shown once (``expires_in_s``: its TTL)."""
        body = TokenCreate(role=role, name=name, request_id=request_id, expires_in_s=expires_in_s)
        data = await self._call("POST", "/v1/tokens", json=body.model_dump(exclude_none=True))
        return _model(TokenCreated, data).token

    async def list_tokens(
        self, *, name: str | None = None, limit: int = 50, after: int | None = None
    ) -> TokenPage:
        """One page of token records (admin only; never a token or its digest)."""
        params: dict[str, str] = {"limit": str(limit)}
        if name is not None:
            params["name"] = name
        if after is not None:
            params["after"] = str(after)
        data = await self._call("GET", "/v1/tokens", params=params, idempotent=True)
        return _model(TokenPage, data)

    async def revoke_token(self, token_id: int) -> TokenInfo:
        """Revoke a token at once (admin only; revoking twice is harmless)."""
        data = await self._call("DELETE", f"/v1/tokens/{token_id}", idempotent=True)
        return _model(TokenInfo, data)

    async def servers(self) -> ServerList:
        """The active requests' attach URLs the master queue vouches for (agent token)."""
        data = await self._call("GET", "/v1/servers", idempotent=True)
        return _model(ServerList, data)

    async def server_certificate(self, request_id: int, csr: str) -> ServerCertificate:
        """The HTTPS certificate of this request's broker for ``csr`` (its broker token)."""
        body = ServerCertificateRequest(csr=csr).model_dump()
        data = await self._call(
            "POST", f"/v1/requests/{request_id}/certificate", json=body, idempotent=True
        )
        return _model(ServerCertificate, data)

    async def whoami(self) -> WhoAmI:
        """Who this client's token belongs to (401 :class:`Unauthorized` when unknown)."""
        data = await self._call("GET", "/v1/whoami", idempotent=True)
        return _model(WhoAmI, data)

    async def healthz(self) -> dict[str, Any]:
        """The service's health answer (no token needed)."""
        data = await self._call("GET", "/healthz", idempotent=True)
        return dict(data) if isinstance(data, dict) else {"status": data}

    # --- plumbing -------------------------------------------------------------------------

    async def _pages(
        self,
        path: str,
        page_model: type[P],
        states: Sequence[str] | None,
        page_size: int,
        limit: int | None,
    ) -> AsyncIterator[P]:
        """Pages of a listing, following the ``next`` cursor; at most ``limit`` records."""
        after: int | None = None
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            params: list[tuple[str, str]] = [("limit", str(size))]
            if states:
                params.append(("state", ",".join(str(s) for s in states)))
            if after is not None:
                params.append(("after", str(after)))
            page = _model(page_model, await self._call("GET", path, params=params, idempotent=True))
            yield page
            got = len(page.requests if isinstance(page, RequestPage) else page.jobs)
            left = None if left is None else left - got
            if page.next is None or got == 0:
                return
            after = page.next

    async def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One API call with the retry policy; the decoded JSON body (``None`` for 204)."""
        retry_on: tuple[type[BaseException], ...] = (
            (_Transient, aiohttp.ClientConnectionError, TimeoutError)
            if idempotent
            else (aiohttp.ClientConnectorError,)
        )
        policy = retry_policy(
            "masterqueue",
            retry_on=retry_on,
            attempts=self._attempts,
            deadline_s=RETRY_DEADLINE_S,
        )
        try:
            async for attempt in policy:
                with attempt:
                    return await self._once(method, path, **kwargs)
        except _Transient as e:
            raise e.error from None
        except (TimeoutError, aiohttp.ClientError) as e:
            raise Unreachable(
                f"master queue at {self.url} unreachable ({method} {path}): {_reason(e)}"
            ) from e
        raise AssertionError("unreachable")  # pragma: no cover - the policy re-raises

    async def _once(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            raise RuntimeError("MasterQueueClient used outside 'async with'")
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        headers.update(kwargs.pop("headers", {}))
        timeout = kwargs.pop("timeout", self._timeout)
        async with self._session.request(
            method, self.url + path, headers=headers, timeout=timeout, **kwargs
        ) as resp:
            if resp.status == 204:
                return None
            text = await resp.text()
            if resp.status >= 400:
                error = decode_error(resp.status, resp.reason or "", text)
                if resp.status in _RETRY_STATUSES:
                    raise _Transient(error)
                raise error
            return _json(text)


class _Transient(Exception):
    """A 502/503/504 answer, kept for the retry policy; the caller sees ``error``."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(str(error))
        self.error = error


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError as e:
        raise ServerError(f"not JSON: {text[:200]!r}", code="bad_response") from e


def _model(cls: type[M], data: Any) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ServerError(
            f"unexpected {cls.__name__} from the master queue: {e}", code="bad_response"
        ) from e
