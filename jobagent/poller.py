"""Looking for PoD servers that need workers: one polling window of at most x seconds.

With a registry that offers long-poll (``GET /healthz`` says ``longpoll: true``) each round
waits on the registry for up to y seconds and returns as soon as a server publishes; without
it, the agent asks every y seconds. The window's length is read from the live configuration
at every round, so an operator's change of ``podPollDuration``/``podPollInterval`` applies
to a window already running; a config change or a stop request also interrupts a long-poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import aiohttp
import structlog

from podgrid.config.retry import retry_policy
from podgrid.config.runtime import wait_event
from podgrid.config.settings import PodSettings
from podgrid.errors import RETRYABLE, CallFailed, ServiceUnavailable
from podgrid.jobagent.servers import ServerOffer, fitting, offers_from_samples, stale_after_ms
from podgrid.jobagent.slot import Slot
from podgrid.monitoring.client import RegistryClient, backoff_s
from podgrid.protocol import MASTERS_CLUSTER, MasterParam

log = structlog.get_logger("podgrid.jobagent")

T = TypeVar("T")
NEEDED_QUERY: Final = f"*/{MASTERS_CLUSTER}/*/{MasterParam.NEEDED_WORKERS}/1:"
DETAIL_PARAMS: Final = "|".join(
    (MasterParam.ADDRESS, MasterParam.NEEDED_WORKERS, MasterParam.REQUIREMENTS)
)
HEALTH_TIMEOUT_S: Final = 5.0


class Interrupted(Exception):
    """The wait was cut short by a configuration change or a stop request."""


class ServerPoller:
    """Runs polling windows against one registry for one slot."""

    def __init__(
        self,
        client: RegistryClient,
        session: aiohttp.ClientSession,
        *,
        longpoll: bool | None = None,
    ) -> None:
        self.client = client
        self._session = session
        self.longpoll = longpoll  # None: ask the registry at the next window
        self.queries = 0

    async def detect_longpoll(self) -> bool:
        """Whether the registry long-polls; False when it cannot say (asked again later)."""
        url = self.client.url / "healthz"
        try:
            timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
            async with self._session.get(url, timeout=timeout) as resp:
                doc = await resp.json(content_type=None) if resp.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        self.longpoll = bool(isinstance(doc, dict) and doc.get("longpoll"))
        log.info("jobagent.registry_mode", longpoll=self.longpoll)
        return self.longpoll

    async def snapshot(
        self,
        slot: Slot,
        settings: PodSettings,
        wait_s: float | None = None,
        since_ms: int | None = None,
    ) -> tuple[list[ServerOffer], int | None]:
        """One round: the fitting servers now (or after a long-poll of ``wait_s``)."""
        self.queries += 1
        needed = await self.client.query(NEEDED_QUERY, wait_s=wait_s, since_ms=since_ms)
        now_ms = needed.now_ms if needed.now_ms is not None else int(time.time() * 1000)
        stale_ms = stale_after_ms(settings.publish_interval_s)
        nodes = sorted({s.node for s in needed if now_ms - s.timestamp_ms <= stale_ms})
        if not nodes:
            return [], needed.now_ms
        self.queries += 1
        detail = await self.client.query(f"*/PoD_Masters/{'|'.join(nodes)}/{DETAIL_PARAMS}")
        offers = offers_from_samples(detail, now_ms, stale_ms)
        return fitting(offers, slot), needed.now_ms

    async def window(
        self,
        slot: Slot,
        settings: Callable[[], PodSettings],
        interrupt: asyncio.Event,
        stopping: asyncio.Event,
        exclude: Callable[[ServerOffer], bool] = lambda offer: False,
    ) -> list[ServerOffer]:
        """Poll until a fitting server shows up (returned) or the window ends ([]).

        ``exclude`` drops candidates the caller does not want now (servers that just refused).
        """
        if self.longpoll is None:
            await self.detect_longpoll()
        started = time.monotonic()
        since: int | None = None
        first = True
        while not stopping.is_set():
            current = settings()
            left = started + current.poll_duration_s - time.monotonic()
            wait_s = (
                None if first or not self.longpoll else max(0.0, min(left, current.poll_interval_s))
            )
            interrupt.clear()
            try:
                offers, now_ms = await self._round(slot, current, wait_s, since, left, interrupt)
            except Interrupted:
                continue
            except CallFailed as e:
                log.warning("jobagent.registry_failed", error=str(e))
                offers, now_ms = [], since
            offers = [o for o in offers if not exclude(o)]
            if offers:
                return offers
            since, first = now_ms if now_ms is not None else since, False
            left = started + settings().poll_duration_s - time.monotonic()
            if left <= 0:
                return []
            if not self.longpoll:
                await _sleep_or(min(left, float(settings().poll_interval_s)), interrupt)
        return []

    async def _round(
        self,
        slot: Slot,
        current: PodSettings,
        wait_s: float | None,
        since: int | None,
        left_s: float,
        interrupt: asyncio.Event,
    ) -> tuple[list[ServerOffer], int | None]:
        policy = retry_policy(
            "registry_query",
            retry_on=RETRYABLE,
            attempts=None,
            deadline_s=max(left_s, 0.0),
        )
        async for attempt in policy:
            with attempt:
                try:
                    return await _unless(self.snapshot(slot, current, wait_s, since), interrupt)
                except ServiceUnavailable as e:
                    # Full registries say when to come back; each agent comes back at its own
                    # jittered moment, so a refused crowd never returns as one storm.
                    delay_s = backoff_s(e)
                    if delay_s is not None:
                        log.info("jobagent.registry_busy", retry_in_s=round(delay_s, 2))
                        await _sleep_or(min(delay_s, max(left_s, 0.0)), interrupt)
                    raise
        raise AssertionError("unreachable: the retry policy re-raises")  # pragma: no cover


async def _unless(work: Awaitable[T], interrupt: asyncio.Event) -> T:
    """``await work`` unless ``interrupt`` is set first (then :class:`Interrupted`)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(interrupt.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # the result no longer matters
        await task
    raise Interrupted


async def _sleep_or(delay_s: float, interrupt: asyncio.Event) -> None:
    """Sleep ``delay_s`` or until ``interrupt`` is set, whichever comes first."""
    await wait_event(interrupt, delay_s)
