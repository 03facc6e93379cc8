"""Talking to the monitoring registry: publishers (ApMon UDP and HTTP) and the query client.

Brokers, job agents and the master queue publish with :class:`ApMonPublisher` (fire and
forget, like MonALISA's ApMon) or :class:`HttpPublisher` (acknowledged, bearer token);
agents and dashboards read with :class:`RegistryClient`, which parses all three of the
registry's answer formats and can long-poll (``wait_s``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, Self

import aiohttp
import structlog
from yarl import URL

from podgrid.config.retry import retry_policy
from podgrid.errors import (
    RETRYABLE,
    CallFailed,
    ServerError,
    ServiceError,
    ServiceUnavailable,
    Unreachable,
)
from podgrid.https import client_session
from podgrid.monitoring.apmon_publisher import SEND_FAILURES, ApMonPublisher, ParamValue
from podgrid.monitoring.registries import split_urls
from podgrid.monitoring.rest_parse import (
    MEDIA_TYPES,
    Format,
    ParseError,
    Sample,
    parse_names,
    parse_samples,
)
from podgrid.web import decode_error

__all__ = [
    "ApMonPublisher",
    "HttpPublisher",
    "ParseError",
    "PublishItem",
    "Publisher",
    "QueryResult",
    "RegistryClient",
    "Sample",
    "backoff_s",
    "rest_path",
    "retry_after_s",
    "wait_for",
]

log = structlog.get_logger("podgrid.monitoring.client")

REQUEST_TIMEOUT_S: Final = 10.0  # s, one HTTP exchange when not long-polling
MAX_RETRY_AFTER_S: Final = 3600.0  # a Retry-After beyond this is not believed
NOW_HEADER: Final = "X-Registry-Now-Ms"


class Publisher(Protocol):
    """What brokers, agents and the master queue need: ApMon UDP or HTTP, chosen by config."""

    async def send(
        self,
        cluster: str,
        node: str,
        params: Mapping[str, ParamValue],
        time_s: float | None = None,
    ) -> int:
        """Publish one parameter set for (cluster, node)."""
        ...

    async def close(self) -> None:
        """Release the socket or HTTP session."""
        ...


@dataclass(frozen=True, slots=True)
class PublishItem:
    """One entry of a ``POST /publish`` batch."""

    cluster: str
    node: str
    params: Mapping[str, ParamValue]
    time_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object the registry expects for this entry."""
        doc: dict[str, Any] = {
            "cluster": self.cluster,
            "node": self.node,
            "params": dict(self.params),
        }
        if self.time_ms is not None:
            doc["time_ms"] = self.time_ms
        return doc


class QueryResult(list[Sample]):
    """The samples of one query, plus the registry's clock (``X-Registry-Now-Ms``) at answer time.

    Pass ``now_ms`` back as ``since_ms`` of the next long-poll to wait only for newer values.
    """

    def __init__(self, samples: Sequence[Sample], now_ms: int | None) -> None:
        super().__init__(samples)
        self.now_ms = now_ms


def rest_path(
    cluster: str,
    parameter: str | None,
    *,
    farm: str = "*",
    node: str = "*",
    tmin_ms: int | None = None,
    tmax_ms: int | None = None,
    condition: str | None = None,
) -> list[str]:
    """The segments of a MonALISA REST query (``tmin_ms``/``tmax_ms`` both or neither)."""
    if (tmin_ms is None) != (tmax_ms is None):
        raise ValueError("give both tmin_ms and tmax_ms, or neither")
    parts = [farm, cluster, node]
    if tmin_ms is not None:
        parts += [str(tmin_ms), str(tmax_ms)]
    if parameter is not None:
        parts.append(parameter)
        if condition is not None:
            parts.append(condition)
    elif condition is not None:
        raise ValueError("a condition needs a parameter")
    return parts


@dataclass
class _Session:
    """An aiohttp session either lent by the caller (kept open) or owned (closed with us)."""

    lent: aiohttp.ClientSession | None
    owned: aiohttp.ClientSession | None = field(default=None)

    def get(self) -> aiohttp.ClientSession:
        if self.lent is not None:
            return self.lent
        if self.owned is None or self.owned.closed:
            self.owned = client_session()
        return self.owned

    async def close(self) -> None:
        if self.owned is not None:
            await self.owned.close()
            self.owned = None


async def _error_of(resp: aiohttp.ClientResponse) -> ServiceError:
    """The error for a non-2xx answer, decoded from the one error body (and Retry-After)."""
    error = decode_error(resp.status, resp.reason or "", await resp.text(), "registry")
    if "Retry-After" in resp.headers:
        error.headers["Retry-After"] = resp.headers["Retry-After"]
    return error


def _unreachable(url: URL, e: Exception) -> Unreachable:
    reason = str(e) or type(e).__name__
    return Unreachable(f"cannot reach registry at {url}: {reason}")


class _Base:
    def __init__(self, url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.url = URL(url.rstrip("/"))
        self._session = _Session(session)

    async def __aenter__(self) -> Self:
        self._session.get()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this object created it."""
        await self._session.close()


class HttpPublisher(_Base):
    """Publishes batches over ``POST /publish`` with a bearer token.

    Connection errors and 5xx are retried (``registry_publish`` policy) and end in
    :class:`podgrid.errors.Unreachable` or a 5xx error; a 4xx error is raised at once.
    """

    def __init__(
        self,
        url: str,
        token: str,
        session: aiohttp.ClientSession | None = None,
        *,
        attempts: int = 5,
        deadline_s: float | None = 30.0,
    ) -> None:
        super().__init__(url, session)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._attempts = attempts
        self._deadline_s = deadline_s

    async def publish(self, items: Sequence[PublishItem]) -> int:
        """Publish a batch; returns how many values (parameters) the registry stored.

        Fewer than sent means some were refused (series cap) or older than what it holds.
        """
        body = [item.to_json() for item in items]
        policy = retry_policy(
            "registry_publish",
            retry_on=RETRYABLE,
            attempts=self._attempts,
            deadline_s=self._deadline_s,
        )
        try:
            async for attempt in policy:
                with attempt:
                    return await self._post(body)
        except CallFailed as e:
            reason = "unavailable" if isinstance(e, RETRYABLE) else "rejected"
            SEND_FAILURES.labels(transport="http", reason=reason).inc()
            raise
        raise AssertionError("unreachable: the retry policy re-raises")  # pragma: no cover

    async def send(
        self,
        cluster: str,
        node: str,
        params: Mapping[str, ParamValue],
        time_s: float | None = None,
    ) -> int:
        """Publish one parameter set (same call shape as :meth:`ApMonPublisher.send`)."""
        time_ms = None if time_s is None else round(time_s * 1000)
        return await self.publish([PublishItem(cluster, node, params, time_ms)])

    async def _post(self, body: list[dict[str, Any]]) -> int:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        try:
            async with self._session.get().post(
                self.url / "publish", json=body, headers=self._headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise await _error_of(resp)
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise _unreachable(self.url, e) from e
        except ValueError as e:
            raise ServerError(
                f"registry answered /publish with invalid JSON: {e}", code="bad_response"
            ) from e
        return int(doc.get("accepted", 0)) if isinstance(doc, dict) else 0


class RegistryClient(_Base):
    """Queries the registry's MonALISA REST API; shares one aiohttp session.

    ``url`` may list several registries (:func:`podgrid.monitoring.registries.split_urls`):
    the client starts at a random one (so agents spread over them) and stays there; when it
    is down (connection refused, reset, timed out) or full (503 with ``Retry-After``), the
    query goes to the next one at once. A long-poll's ``since_ms`` is a registry's own clock,
    so the first query on a registry that did not answer the previous one is asked without
    ``wait_s``: the current state, never a server missed because it was announced while the
    agent waited on another registry.
    """

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        urls = split_urls(url)
        if not urls:
            raise ValueError(f"no registry URL in {url!r}")
        super().__init__(urls[0], session)
        self.urls = [URL(u) for u in urls]
        self._rng = rng or random.Random()  # noqa: S311 (spreads load; not a secret)
        self._current = self._rng.randrange(len(self.urls))
        self.url = self.urls[self._current]
        self._answered_by: int | None = None  # the registry whose clock ``since_ms`` is
        self._busy_until: dict[int, float] = {}  # registry index -> monotonic s (Retry-After)
        self.failovers = 0

    async def query(
        self,
        path_or_parts: str | Sequence[str],
        fmt: Format = "json",
        wait_s: float | None = None,
        since_ms: int | None = None,
    ) -> QueryResult:
        """Values matching a query such as ``"*/PoD_Masters/*/-60000/-1/NeededWorkers/1:"``.

        ``path_or_parts`` is a path (with or without the leading ``/rest/``) or its segments
        (see :func:`rest_path`). ``wait_s`` long-polls: the registry answers when a matching
        series changes (newer than ``since_ms`` when given) or when the wait ends.
        """
        body, now_ms = await self._get(path_or_parts, fmt, wait_s, since_ms)
        return QueryResult(parse_samples(body, fmt), now_ms)

    async def parameters(
        self,
        cluster: str = "*",
        *,
        farm: str = "*",
        node: str = "*",
        fmt: Format = "json",
    ) -> list[str]:
        """The distinct parameter names published for (farm, cluster, node)."""
        body, _ = await self._get([farm, cluster, node], fmt, None, None)
        return parse_names(body, fmt)

    def _url(self, base: URL, path_or_parts: str | Sequence[str]) -> URL:
        if isinstance(path_or_parts, str):
            parts = path_or_parts.strip("/").split("/")
            if parts[0] == "rest":
                parts = parts[1:]
        else:
            parts = list(path_or_parts)
        if not parts or any(p == "" for p in parts):
            raise ValueError(f"empty segment in registry query {path_or_parts!r}")
        return base.joinpath("rest", *parts)

    async def _get(
        self,
        path_or_parts: str | Sequence[str],
        fmt: Format,
        wait_s: float | None,
        since_ms: int | None,
    ) -> tuple[str, int | None]:
        now = time.monotonic()
        order = [(self._current + step) % len(self.urls) for step in range(len(self.urls))]
        ready = [i for i in order if self._busy_until.get(i, 0.0) <= now]
        if not ready:  # every registry said "later": do not ask any of them before that
            wait = min(self._busy_until.values()) - now
            raise ServiceUnavailable(
                f"every registry asked to retry later ({len(self.urls)})",
                code="too_many_waiters",
                headers={"Retry-After": f"{wait:.3f}"},
            )
        last: CallFailed | None = None
        for index in ready:
            moved = since_ms is not None and self._answered_by not in (None, index)
            try:
                answer = await self._get_one(
                    self.urls[index], path_or_parts, fmt, None if moved else wait_s, since_ms
                )
            except (Unreachable, ServiceUnavailable) as e:
                last = e
                if isinstance(e, ServiceUnavailable):
                    away_s = backoff_s(e, self._rng) or 0.0
                    self._busy_until[index] = time.monotonic() + away_s
                if len(self.urls) > 1:
                    log.info("registry_client.failover", url=str(self.urls[index]), error=str(e))
                continue
            if index != self._current:
                self._current, self.url = index, self.urls[index]
                self.failovers += 1
            self._answered_by = index
            self._busy_until.pop(index, None)
            return answer
        assert last is not None
        self._current = (self._current + 1) % len(self.urls)  # next time, start elsewhere
        self.url = self.urls[self._current]
        raise last

    async def _get_one(
        self,
        base: URL,
        path_or_parts: str | Sequence[str],
        fmt: Format,
        wait_s: float | None,
        since_ms: int | None,
    ) -> tuple[str, int | None]:
        params: dict[str, str] = {}
        if wait_s is not None:
            params["wait"] = repr(float(wait_s))
        if since_ms is not None:
            params["since"] = str(since_ms)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S + max(wait_s or 0.0, 0.0))
        url = self._url(base, path_or_parts)
        started = time.monotonic()
        try:
            async with self._session.get().get(
                url, params=params, headers={"Accept": MEDIA_TYPES[fmt]}, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise await _error_of(resp)
                body = await resp.text()
                now = resp.headers.get(NOW_HEADER)
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise _unreachable(base, e) from e
        log.debug(
            "registry_client.query", url=str(url), took_s=round(time.monotonic() - started, 4)
        )
        try:
            now_ms = int(now) if now is not None else None
        except ValueError:
            now_ms = None
        return body, now_ms


def retry_after_s(error: BaseException) -> float | None:
    """Seconds a 503's ``Retry-After`` asked for (delta-seconds form), else None."""
    if not isinstance(error, ServiceUnavailable):
        return None
    text = error.headers.get("Retry-After", "").strip()
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER_S else None


def backoff_s(error: BaseException, rng: random.Random | None = None) -> float | None:
    """How long to stay away after ``error``: its ``Retry-After`` times a jitter in [0.5, 1.5).

    Spread so that the agents a full registry turned away do not all come back together.
    """
    seconds = retry_after_s(error)
    if seconds is None:
        return None
    return seconds * (0.5 + (rng or random).random())


async def wait_for(
    client: RegistryClient,
    path_or_parts: str | Sequence[str],
    *,
    timeout_s: float,
    fmt: Format = "json",
) -> QueryResult:
    """Long-poll until the query has at least one result or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    since = 0  # without `since`, a long-poll would hold even when values exist
    while True:
        left = deadline - time.monotonic()
        result = await client.query(path_or_parts, fmt, wait_s=max(left, 0.0), since_ms=since)
        if result or left <= 0:
            return result
        since = result.now_ms if result.now_ms is not None else since
        await asyncio.sleep(0)
