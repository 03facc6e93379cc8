"""The user's Python API: submit a server request, wait for the cluster, connect to it.

.. code-block:: python

    async with PodGrid.connect() as grid:
        req = await grid.submit("request.toml")
        await grid.wait_ready(req.id, progress=print)
        info = await grid.connection(req.id)
        client = await distributed.Client(info.address, security=info.security(), asynchronous=True)

The master queue's URL and token come from :func:`podgrid.endpoints.discover` (arguments, then
``PODGRID_URL``/``PODGRID_TOKEN``, then ``podgrid up``'s ``endpoints.json``, then the user's
``client.toml``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from podgrid.config.request import (
    RequestFormat,
    ServerRequest,
    parse_request,
    read_request_text,
)
from podgrid.config.request_errors import RequestError, RequestIssue
from podgrid.endpoints import Endpoint, discover
from podgrid.errors import BadRequest, PodGridError
from podgrid.https import trust_ca_file
from podgrid.masterqueue.client import MAX_LONGPOLL_S, MasterQueueClient
from podgrid.protocol import (
    READY_STATES,
    REQUEST_FINAL,
    ConnectionInfo,
    JobDetail,
    JobRecord,
    JobSpec,
    RequestDetail,
    RequestRecord,
    RequestState,
)
from podgrid.protocol.csr import csr_for, new_private_key

__all__ = [
    "ACTIVE_STATES",
    "READY_STATES",
    "ConnectionInfo",
    "NoConnectionYet",
    "PodGrid",
    "RequestFailed",
    "WaitTimeout",
]

DEFAULT_POLL_INTERVAL_S: Final = 1.0  # s between two polls of GET /v1/requests/{id}
ACTIVE_STATES: Final = frozenset(set(RequestState) - REQUEST_FINAL)
_SUFFIX_FORMATS: Final[dict[str, RequestFormat]] = {".toml": "toml", ".jdl": "jdl", ".json": "json"}

Progress = Callable[[RequestDetail], object]


class RequestFailed(PodGridError):
    """The request reached a final state (CANCELLED, EXPIRED, FAILED, DONE) before READY."""

    def __init__(self, record: RequestRecord) -> None:
        reason = f": {record.reason}" if record.reason else ""
        super().__init__(f"request {record.id} is {record.state}{reason}")
        self.record = record


class NoConnectionYet(PodGridError):
    """The request's broker has not reported a scheduler address yet."""

    def __init__(self, request_id: int, state: RequestState) -> None:
        super().__init__(f"request {request_id} has no connection info yet (state {state})")
        self.request_id = request_id
        self.state = state


class WaitTimeout(PodGridError):
    """``wait_ready`` gave up before the request was READY; ``record`` is the last seen."""

    def __init__(self, record: RequestRecord, timeout_s: float) -> None:
        super().__init__(
            f"request {record.id} still {record.state} after {timeout_s:g} s "
            f"({record.worker_count}/{record.request.min_workers} workers)"
        )
        self.record = record


def _as_request_error(e: BadRequest, source: str) -> BadRequest | RequestError:
    """The service's ``invalid_request_config`` answer as a ``RequestError`` naming ``source``."""
    if e.code != "invalid_request_config" or not e.fields:
        return e
    issues = [
        RequestIssue(
            source,
            str(f.get("msg", "")),
            f.get("line") if isinstance(f.get("line"), int) else None,
            f.get("column") if isinstance(f.get("column"), int) else None,
            ".".join(str(p) for p in f.get("loc") or []) or None,
        )
        for f in e.fields
    ]
    return RequestError(issues)


def _read_request_file(path: Path) -> tuple[str, RequestFormat | None]:
    """The file's text and format, after validating it (``RequestError`` on any problem).

    Read once, bounded and regular files only (:func:`read_request_text`), then parsed.
    """
    text = read_request_text(path)
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    parse_request(text, fmt=fmt, source=str(path))
    return text, fmt


class PodGrid:
    """The user's handle on a PoD Grid: requests, clusters and batch jobs.

    Create with :meth:`connect` (endpoint discovery) or from a ready :class:`MasterQueueClient`.
    """

    def __init__(self, client: MasterQueueClient, endpoint: Endpoint | None = None) -> None:
        self.client = client
        self.endpoint = endpoint

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        token: str | None = None,
        *,
        state_dir: Path | None = None,
    ) -> PodGrid:
        """A grid handle for ``async with``; raises ``EndpointError`` if nothing is configured."""
        endpoint = discover(url, token, state_dir=state_dir)
        if endpoint.ca_file is not None:
            trust_ca_file(endpoint.ca_file)
        return cls(MasterQueueClient(endpoint.url, endpoint.token), endpoint)

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.client.close()

    # --- server requests ------------------------------------------------------------------

    async def submit(
        self,
        request: str | Path | ServerRequest,
        *,
        idempotency_key: str | None = None,
    ) -> RequestRecord:
        """Submit a request file path (TOML, JDL or JSON) or a parsed :class:`ServerRequest`.

        A file is validated here first, so mistakes surface as ``RequestError`` with line and
        field before anything is sent; the service's own refusals (e.g. its operator's cap on
        ``max_workers``) come back as a ``RequestError`` naming the file too.
        """
        if isinstance(request, ServerRequest):
            return await self.client.submit_request(request, idempotency_key=idempotency_key)
        path = Path(request)
        text, fmt = await asyncio.to_thread(_read_request_file, path)
        try:
            return await self.client.submit_request(text, fmt, idempotency_key=idempotency_key)
        except BadRequest as e:
            raise _as_request_error(e, str(path)) from e

    async def submit_text(
        self, text: str, fmt: RequestFormat | None = None, *, idempotency_key: str | None = None
    ) -> RequestRecord:
        """Submit a request given as text (validated here first, like :meth:`submit`)."""
        parse_request(text, fmt=fmt)
        try:
            return await self.client.submit_request(text, fmt, idempotency_key=idempotency_key)
        except BadRequest as e:
            raise _as_request_error(e, "<request>") from e

    async def request(self, request_id: int) -> RequestDetail:
        """One of the user's requests, with its workers and timeline."""
        return await self.client.get_request(request_id)

    async def requests(self, *, include_finished: bool = False) -> list[RequestRecord]:
        """The user's requests, oldest first; only active ones unless ``include_finished``."""
        states = None if include_finished else sorted(ACTIVE_STATES)
        return [r async for r in self.client.list_requests(states)]

    async def latest_active(self) -> RequestRecord | None:
        """The user's most recently submitted request that is not finished, if any."""
        active = await self.requests()
        return max(active, key=lambda r: r.id) if active else None

    async def cancel(self, request_id: int) -> RequestRecord:
        """Cancel one of the user's requests."""
        return await self.client.cancel_request(request_id)

    async def connection(self, request_id: int, *, key_pem: str | None = None) -> ConnectionInfo:
        """How to connect to the request's cluster; :class:`NoConnectionYet` before it has one.

        The owner's private key is made here (or is ``key_pem``, a PEM EC/RSA key of yours),
        and only a CSR for it is sent; the cluster's broker signs it. The answer carries the
        key in ``tls_client_key`` for :meth:`ConnectionInfo.security`: it never crossed the
        network and is never serialized.
        """
        key = key_pem if key_pem is not None else new_private_key()
        reply = await self.client.connection(request_id, csr=csr_for(key))
        if reply.connection is None or reply.connection.tls_client_cert is None:
            raise NoConnectionYet(reply.id, reply.state)
        return reply.connection.model_copy(update={"tls_client_key": key})

    async def wait_ready(
        self,
        request_id: int,
        *,
        progress: Progress | None = None,
        timeout_s: float | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> RequestDetail:
        """Wait until the request is READY or FULL; ``progress`` sees every record received.

        Long-polls the master queue (``?wait=&since=``): each answer comes as soon as the
        request changed, so READY reaches the caller in one round trip. ``poll_interval_s`` is
        the pause after an answer that brought no change (a master queue without long-polls).
        Raises :class:`RequestFailed` on a final state first, :class:`WaitTimeout` after
        ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        detail = await self.client.get_request(request_id)
        while True:
            if progress is not None:
                progress(detail)
            if detail.state in READY_STATES:
                return detail
            if detail.state in REQUEST_FINAL:
                raise RequestFailed(detail)
            left = MAX_LONGPOLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(detail, timeout_s or 0.0)
            asked = time.monotonic()
            wait_s = min(left, MAX_LONGPOLL_S)
            previous = detail.version
            detail = await self.client.get_request(request_id, wait_s=wait_s, since=previous)
            quick = time.monotonic() - asked < wait_s / 2
            if detail.version == previous and quick:
                await asyncio.sleep(min(poll_interval_s, max(left, 0.0)))  # no long-poll there

    # --- batch jobs -----------------------------------------------------------------------

    async def submit_job(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        **requirements: Any,
    ) -> JobRecord:
        """Submit a batch job: an argv (no shell) plus requirements (cores, memory_mb, ...)."""
        spec = JobSpec(command=list(command), env=dict(env or {}), **requirements)
        return await self.client.submit_job(spec, idempotency_key=idempotency_key)

    async def jobs(self) -> list[JobRecord]:
        """The user's batch jobs, oldest first."""
        return [j async for j in self.client.list_jobs()]

    async def job(self, job_id: int) -> JobDetail:
        """One of the user's batch jobs, with its history."""
        return await self.client.get_job(job_id)
