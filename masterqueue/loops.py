"""The master queue's background loops: launching brokers and the expiry/retention sweeps.

:class:`LaunchLoop` claims WAITING requests with a compare-and-set WAITING→STARTING (so two
master-queue processes never launch one request twice), gives each a per-request broker token
and starts its broker; it then watches the brokers *it* started: one that exits while its
request is live turns the request FAILED (exit status and log tail as the reason); one whose
request became final (cancelled, expired, heartbeat lost → FAILED by the sweep) gets
``broker_stop_grace_s`` to stop by itself, then SIGTERM, then SIGKILL of its process group.
:class:`SweepLoop` runs the store's sweeps, each safe in several processes at once.
:class:`QueueDepthPublisher` tells the registry how deep the batch queue is (cluster
``PoD_MasterQueue``, node ``batch``), for dashboards and operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from podgrid.config import environment
from podgrid.config.runtime import wait_event
from podgrid.masterqueue.errors import IllegalTransition, MasterQueueError, RecordNotFound
from podgrid.masterqueue.launcher import (
    REGISTRY_ENV,
    URL_ENV,
    Launcher,
    LaunchHandle,
    clean_reason,
    stop,
)
from podgrid.masterqueue.metrics import MasterQueueMetrics
from podgrid.masterqueue.states import JOB_LEASED
from podgrid.masterqueue.store import Store
from podgrid.monitoring.client import Publisher
from podgrid.protocol import (
    QUEUE_CLUSTER,
    QUEUE_NODE,
    REQUEST_FINAL,
    JobState,
    QueueParam,
    RequestRecord,
    RequestState,
)

log = structlog.get_logger("podgrid.masterqueue")

LAUNCH_BATCH = 50  # WAITING requests looked at per tick
KILL_AFTER_TERM_S = 5.0  # seconds between SIGTERM and SIGKILL of a broker's group
PURGE_EVERY_S = 60.0  # seconds between retention purges


async def run_every(
    name: str,
    tick: Callable[[], Awaitable[None]],
    interval_s: float,
    metrics: MasterQueueMetrics,
    wake: asyncio.Event | None = None,
) -> None:
    """Call ``tick`` every ``interval_s`` (sooner when ``wake`` is set) until cancelled.

    A failing tick is logged and counted; the loop goes on.
    """
    while True:
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.loop_errors.labels(loop=name).inc()
            log.exception("masterqueue.loop_failed", loop=name)
        if wake is None:
            await asyncio.sleep(interval_s)
            continue
        await wait_event(wake, interval_s)
        wake.clear()


class LaunchLoop:
    """Starts brokers for WAITING requests and watches the ones this process started."""

    def __init__(
        self,
        store: Store,
        launcher: Launcher,
        metrics: MasterQueueMetrics,
        *,
        url: Callable[[], str | None],
        registry_url: str,
        stop_grace_s: float,
        apmon_password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.store = store
        self.launcher = launcher
        self.metrics = metrics
        self.url = url
        self.registry_url = registry_url
        self.apmon_password = apmon_password
        self.ca_file = ca_file
        self.stop_grace_s = stop_grace_s
        self.handles: dict[int, LaunchHandle] = {}
        self.started_at: dict[int, float] = {}  # request id -> wall time its broker started

    async def tick(self) -> None:
        """Launch what waits, then watch what runs, then top up the warm brokers."""
        await self.launch_waiting()
        await self.watch()
        await self.launcher.fill()

    async def launch_waiting(self) -> None:
        """Start a broker for every WAITING request this process wins the claim for."""
        url = self.url()
        if url is None:
            return  # not serving yet: brokers could not reach us
        waiting = await self.store.list_requests(states=[RequestState.WAITING], limit=LAUNCH_BATCH)
        for record in waiting:
            await self._launch(record, url)

    async def _launch(self, record: RequestRecord, url: str) -> None:
        host = self.launcher.pick_host()
        try:
            await self.store.transition(
                record.id,
                RequestState.STARTING,
                f"starting a broker on {host}",
                expected=RequestState.WAITING,
                master_host=host,
            )
        except (IllegalTransition, RecordNotFound):
            return  # another master queue claimed it, or it was cancelled meanwhile
        token = await self.store.create_token("broker", f"broker-{record.id}", record.id)
        env = {URL_ENV: url, REGISTRY_ENV: self.registry_url}
        if self.apmon_password:
            env[environment.APMON_PASSWORD] = self.apmon_password
        if self.ca_file is not None:
            env[environment.CA_FILE] = str(self.ca_file)
        try:
            handle = await self.launcher.start(record, token, env, host)
        except OSError as e:
            self.metrics.launcher_failures.labels(reason="start").inc()
            log.error("masterqueue.broker_start_failed", request_id=record.id, error=str(e))
            await self._fail(record.id, f"broker could not start on {host}: {e}")
            return
        self.handles[record.id] = handle
        self.started_at[record.id] = time.time()
        self.metrics.launcher_starts.inc()
        log.info(
            "masterqueue.broker_started",
            request_id=record.id,
            host=host,
            pid=handle.pid,
            log=str(handle.log_path),
        )

    async def _fail(self, request_id: int, reason: str) -> None:
        with contextlib.suppress(IllegalTransition, RecordNotFound):
            await self.store.transition(request_id, RequestState.FAILED, reason)

    async def watch(self) -> None:
        """Check every broker this process started."""
        for request_id, handle in list(self.handles.items()):
            try:
                await self._watch_one(request_id, handle)
            except MasterQueueError as e:
                log.warning("masterqueue.broker_watch_failed", request_id=request_id, error=str(e))

    async def _watch_one(self, request_id: int, handle: LaunchHandle) -> None:
        try:
            state = (await self.store.get_request(request_id)).state
        except RecordNotFound:
            state = RequestState.DONE  # purged: nothing left to serve
        code = await self.launcher.exit_code(handle)
        if code is not None:
            if state not in REQUEST_FINAL:
                how = await self.launcher.describe_exit(handle)
                reason = clean_reason(f"broker exited while {state.value}: {how}")
                self.metrics.launcher_failures.labels(reason="exited").inc()
                log.warning("masterqueue.broker_exited", request_id=request_id, reason=reason)
                await self._fail(request_id, reason)
            await self.launcher.kill(handle)  # whatever it left behind in its group
            self._forget(request_id)
            return
        if state in REQUEST_FINAL:
            await self._stop_step(request_id, handle, state)

    async def _stop_step(self, request_id: int, handle: LaunchHandle, state: RequestState) -> None:
        now = time.monotonic()
        if handle.final_seen_at is None:
            handle.final_seen_at = now
        if handle.term_sent_at is None and now - handle.final_seen_at >= self.stop_grace_s:
            log.info("masterqueue.broker_terminated", request_id=request_id, state=state.value)
            await self.launcher.terminate(handle)
            handle.term_sent_at = now
        elif handle.term_sent_at is not None and now - handle.term_sent_at >= KILL_AFTER_TERM_S:
            log.warning("masterqueue.broker_killed", request_id=request_id, state=state.value)
            self.metrics.launcher_failures.labels(reason="killed").inc()
            await self.launcher.kill(handle)
            self._forget(request_id)

    def _forget(self, request_id: int) -> None:
        self.handles.pop(request_id, None)

    async def stop_all(self) -> None:
        """Stop every broker this process started (used when ``stop_brokers_on_exit``)."""
        await asyncio.gather(
            *(stop(self.launcher, h, self.stop_grace_s) for h in self.handles.values())
        )
        self.handles.clear()


class SweepLoop:
    """Lease expiry, request expiry (max_wait, ttl, lost broker heartbeat) and retention."""

    def __init__(
        self,
        store: Store,
        metrics: MasterQueueMetrics,
        *,
        heartbeat_timeout_s: float,
        retention_s: float,
        on_requests_swept: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.retention_s = retention_s
        self.on_requests_swept = on_requests_swept
        self._last_purge = 0.0

    async def tick(self) -> None:
        """One round of every sweep (purge at most every minute)."""
        now = datetime.now(UTC)
        leases = await self.store.expire_leases(now)
        self._count("leases", len(leases))
        swept = await self.store.expire_requests(now, self.heartbeat_timeout_s)
        self._count("requests", len(swept))
        for s in swept:
            log.info("masterqueue.request_swept", request_id=s.id, state=s.state, reason=s.reason)
        if swept:
            self.on_requests_swept()
        if time.monotonic() - self._last_purge >= PURGE_EVERY_S:
            self._last_purge = time.monotonic()
            purged = await self.store.purge_finished(now - timedelta(seconds=self.retention_s))
            self._count("purge", sum(purged))

    def _count(self, kind: str, n: int) -> None:
        self.metrics.sweeps.labels(kind=kind).inc()
        if n:
            self.metrics.swept.labels(kind=kind).inc(n)


class QueueDepthPublisher:
    """Publishes ``PoD_MasterQueue/batch``: WaitingJobs, RunningJobs, ActiveRequests."""

    def __init__(self, store: Store, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher

    async def tick(self) -> None:
        """Count once and send; a lost datagram is repaired by the next tick."""
        requests_by_state, jobs_by_state = await self.store.state_counts()
        params: dict[str, int] = {
            QueueParam.WAITING_JOBS: jobs_by_state.get(JobState.WAITING.value, 0),
            QueueParam.RUNNING_JOBS: sum(jobs_by_state.get(s.value, 0) for s in JOB_LEASED),
            QueueParam.ACTIVE_REQUESTS: sum(
                n
                for state, n in requests_by_state.items()
                if RequestState(state) not in REQUEST_FINAL
            ),
        }
        await self.publisher.send(QUEUE_CLUSTER, QUEUE_NODE, params)
