"""One cluster's life: a TLS Dask scheduler, its places, publication, reports and stop rules.

:class:`Broker` is driven by three background loops once :meth:`Broker.begin` has the attach
URL: *publish* (every ``podPublishInterval`` s and at once on a change), *report* (heartbeat
to the master queue every ``heartbeat_interval_s`` s and on a change) and *watch* (expired
reservations, max_wait, TTL, idle timeout, adaptive target). A stop condition calls
:meth:`Broker.request_stop`, which sets :attr:`Broker.finished`; :meth:`Broker.stop` then
shuts down in a fixed order: close attaches, final ``NeededWorkers=0`` publication, retire
the workers, close the scheduler, final report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import structlog

from podgrid.broker import dashboard_server
from podgrid.broker.dashboard_server import DASHBOARD_PATH, DASHBOARD_PREFIX, confine
from podgrid.broker.guard import PeerGuard
from podgrid.broker.metrics import BrokerMetrics
from podgrid.broker.places import Places
from podgrid.broker.plugin import PlacesPlugin
from podgrid.broker.publisher import Publication
from podgrid.broker.reporter import Reporter, RequestGone
from podgrid.broker.scaling import Scaling
from podgrid.broker.settings import BrokerSettings
from podgrid.broker.tls import ClusterTLS
from podgrid.config.runtime import wait_event
from podgrid.protocol import (
    REQUEST_FINAL,
    ConnectionInfo,
    MasterParam,
    RequestRecord,
    RequestState,
    Requirements,
)

log = structlog.get_logger("podgrid.broker")

WATCH_INTERVAL_S: Final = 0.2  # seconds between two checks of the stop rules
REPORT_MIN_GAP_S: Final = 0.2  # seconds between two reports, however busy the cluster
RETIRE_COOLDOWN_S: Final = 2.0  # seconds between two adaptive scale-downs
FIRST_REPORT_WAIT_S: Final = 2.0  # seconds the first publication waits for the first report
R = RequestState


class Broker:
    """The PoD server of one request (see the module docstring for the life cycle)."""

    def __init__(
        self,
        settings: BrokerSettings,
        record: RequestRecord,
        *,
        publication: Publication,
        reporter: Reporter,
        attach_timeout_s: float,
        publish_interval_s: float,
        server_idle_timeout_s: float,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.record = record
        self.request = record.request
        self.publication = publication
        self.reporter = reporter
        self.publish_interval_s = publish_interval_s
        # The site's podServerIdleTimeout (0: never); the request's own idle_timeout wins.
        # Kept current by the service's config listener, like publish_interval_s.
        self.server_idle_timeout_s = server_idle_timeout_s
        self.metrics = metrics or BrokerMetrics()
        self.places = Places(record.id, self.request.max_workers, attach_timeout_s)
        self.requirements = Requirements.of(self.request, settings.min_slot_ttl_s)
        created_s = record.created_at.timestamp()
        self.wait_deadline_s = created_s + self.request.max_wait_s  # epoch seconds
        self.expires_s = created_s + self.request.ttl_s  # epoch seconds
        # Certificates it signs end with the cluster; only the owner is admitted as a client.
        self.tls = ClusterTLS(
            f"pod{record.id}", float(self.request.ttl_s), owner=record.owner, expires=self.expires_s
        )
        self.guard = PeerGuard(self.tls.owner_cn, self.tls.scheduler_cn)
        self.state = R.STARTING
        self.reached_ready = False
        self.publishing = False
        self.scaling = Scaling(self.request)
        self.target = self.request.max_workers
        self.scheduler: Any = None
        self.dashboard_socket: Path | None = None
        self.attach_url: str | None = None
        self.final: tuple[RequestState, str] | None = None
        self.finished = asyncio.Event()
        self.started_at = time.monotonic()
        self._mq_final = False
        self._publish_wake = asyncio.Event()
        self._reported = asyncio.Event()  # the master queue has the attach URL
        self._report_wake = asyncio.Event()
        self._state_changed = asyncio.Event()  # a report to make now, past the minimum gap
        self._reported_state: RequestState | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._last_retire = 0.0
        self._sent_open: bool | None = None
        self._sent_state: RequestState | None = None
        self._connection_sent = False

    # -- start ----------------------------------------------------------------------------

    async def start_scheduler(self) -> None:
        """Write the TLS files and start the Dask scheduler (TLS required) on a free port.

        The peer guard goes in before the scheduler listens: from its first connection on,
        only the owner's certificate acts as a client and a worker's only as that worker.
        """
        from distributed import Scheduler

        self.tls.write(self.settings.tls_dir)
        scheduler = Scheduler(
            host=self.settings.http_host,
            port=0,
            protocol="tls",
            security=self.tls.scheduler_security(),
            dashboard=True,
            http_prefix=DASHBOARD_PREFIX,
            # Bound on a free loopback port while built, then moved to a private Unix socket
            # (confine): the owner reaches it only through the broker's HTTPS server.
            dashboard_address="127.0.0.1:0",
            plugins=[PlacesPlugin(self.places, self.changed, self.spawn)],
        )
        self.dashboard_socket = confine(scheduler)
        self.guard.install(scheduler)
        self.scheduler = await scheduler
        log.info("broker.scheduler_started", address=self.scheduler.address)

    def begin(self, attach_url: str) -> None:
        """Open the places, start publishing and reporting (the HTTP API now serves)."""
        self.attach_url = attach_url
        self.publication.static.update(
            {
                MasterParam.ADDRESS: attach_url,
                MasterParam.MIN_WORKERS: self.request.min_workers,
                MasterParam.MAX_WORKERS: self.request.max_workers,
                MasterParam.OWNER: self.record.owner,
                MasterParam.REQUIREMENTS: self.requirements.to_json(),
                MasterParam.EXPIRES: int(self.expires_s),
            }
        )
        self.state = R.PUBLISHING
        self.publishing = True
        self.places.open = True
        for name, loop in (
            ("publish", self._publish_loop()),
            ("report", self._report_loop()),
            ("watch", self._watch_loop()),
        ):
            self._tasks.append(self._task(loop, f"broker-{name}"))
        log.info("broker.publishing", request_id=self.record.id, attach_url=attach_url)

    # -- events ---------------------------------------------------------------------------

    def changed(self) -> None:
        """Places or workers changed: re-evaluate and tell the registry and master queue soon.

        A new state (READY the moment ``min_workers`` are connected) is reported at once;
        other changes at most every :data:`REPORT_MIN_GAP_S`.
        """
        self._evaluate()
        self._publish_wake.set()
        self._report_wake.set()
        if self.state != self._reported_state:
            self._state_changed.set()
        self.metrics.workers.set(self.places.connected)
        self.metrics.pending.set(self.places.pending)

    def request_stop(self, state: RequestState, reason: str) -> None:
        """Ask for a shutdown ending in ``state``; the first request wins."""
        if self.final is not None:
            return
        self.final = (state, reason)
        self.places.open = False
        log.info("broker.stop_requested", request_id=self.record.id, state=state, reason=reason)
        self.finished.set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` in the background, keeping a reference and logging its failure."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Task[Any]) -> None:
        self._side_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("broker.task_failed", task=task.get_name(), error=repr(task.exception()))

    # -- rules ----------------------------------------------------------------------------

    def live_state(self) -> RequestState:
        """PUBLISHING until min_workers, READY from there, FULL at max_workers."""
        connected = self.places.connected
        if connected >= self.places.max_workers:
            return R.FULL
        if connected >= self.request.min_workers or self.reached_ready:
            return R.READY
        return R.PUBLISHING

    def _evaluate(self) -> None:
        if self.final is not None or self.attach_url is None:
            return
        state = self.live_state()
        self.reached_ready = self.reached_ready or state in (R.READY, R.FULL)
        self.state = state
        in_window = time.time() < self.wait_deadline_s
        # Elastic clusters (adaptive, or scaled by the owner) keep asking for their target.
        elastic = self.scaling.elastic
        self.publishing = elastic or (in_window and state != R.FULL)
        self.places.open = elastic or in_window
        if not in_window and not self.reached_ready:
            reason = (
                f"min_workers ({self.request.min_workers}) not reached within max_wait "
                f"({self.request.max_wait_s} s)"
            )
            self.request_stop(R.EXPIRED, reason)

    def needed(self) -> int:
        """The ``NeededWorkers`` to publish now."""
        return self.places.needed(self.target) if self.publishing and not self.final else 0

    # -- loops ----------------------------------------------------------------------------

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._loop_done)
        return task

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("broker.loop_crashed", loop=task.get_name(), error=repr(task.exception()))
            self.request_stop(R.FAILED, f"{task.get_name()} crashed: {task.exception()!r}")

    # The loops also end on ``final``: Python 3.11's wait_for can swallow a cancellation.
    async def _publish_loop(self) -> None:
        # Agents attach only where the master queue vouches for the attach URL: tell it first.
        if not await wait_event(self._reported, FIRST_REPORT_WAIT_S):
            log.warning("broker.publishing_unreported", waited_s=FIRST_REPORT_WAIT_S)
        while self.final is None:
            self._evaluate()
            await self.publish_once()
            await wait_event(self._publish_wake, self.publish_interval_s)
            self._publish_wake.clear()

    async def publish_once(self, *, force: bool = False) -> None:
        """Publish while publishing; once stopped, only when the state changes (Needed=0)."""
        open_now = self.publishing and self.final is None
        state = self.final[0] if self.final is not None else self.state
        if not (open_now or force or self._sent_open or state != self._sent_state):
            return
        ok = await self.publication.send(
            needed=self.needed(), workers=self.places.connected, state=state.value
        )
        self.metrics.publications.labels(result="sent" if ok else "failed").inc()
        if ok:
            if self._sent_open and not open_now:
                log.info("broker.publish_stopped", request_id=self.record.id, state=state)
            self._sent_open, self._sent_state = open_now, state

    async def _report_loop(self) -> None:
        while self.final is None:
            self._state_changed.clear()
            self._reported_state = self.state
            await self._report_live()
            # The minimum gap between reports, cut short by a change of state.
            if not await wait_event(self._state_changed, REPORT_MIN_GAP_S):
                await wait_event(self._report_wake, self.settings.heartbeat_interval_s)
            self._report_wake.clear()

    def connection(self) -> ConnectionInfo:
        """What the master queue tells the owner: address, CA, attach URL (no certificate, no key).

        The owner's certificate is signed on demand for the owner's own CSR (``POST /v1/sign``,
        which the master queue calls from the attach URL given here).
        """
        return ConnectionInfo(
            address=self.scheduler.address,
            tls_ca=self.tls.ca.cert_pem,
            dashboard_link=f"{self.attach_url}{DASHBOARD_PATH}",  # the owner's only
            attach_url=self.attach_url,
            expires=int(self.expires_s),
        )

    async def _report_live(self) -> None:
        if self.final is not None:
            return
        send_connection = not self._connection_sent
        try:
            reply = await self.reporter.report(
                self.state,
                self.places.workers(),
                address=self.scheduler.address,
                connection=self.connection() if send_connection else None,
            )
        except RequestGone as e:
            self._mq_final = True
            self.request_stop(R.FAILED, f"the master queue refuses this broker: {e}")
            return
        self.metrics.reports.labels(result="ok" if reply else "failed").inc()
        if reply is None:
            return
        self._connection_sent = True
        self._reported.set()
        if reply.cancel or reply.state in REQUEST_FINAL:
            self._mq_final = True
            reason = reply.reason or f"the request is {reply.state.value}"
            self.request_stop(reply.state, reason)

    async def _watch_loop(self) -> None:
        while self.final is None:
            self.watch_once()
            await asyncio.sleep(WATCH_INTERVAL_S)

    def watch_once(self) -> None:
        """Expired reservations, TTL, idle timeout, a dead scheduler, the adaptive target."""
        gone = self.places.expire()
        if gone:
            self.metrics.expired.inc(len(gone))
            log.info("broker.reservations_expired", names=[p.name for p in gone])
            self.changed()
        now = time.time()
        if now >= self.expires_s:
            self.request_stop(R.EXPIRED, f"ttl of {self.request.ttl_s} s is over")
        idle_since = self.scheduler.idle_since
        own_s = self.request.idle_timeout_s
        idle_s = self.server_idle_timeout_s if own_s is None else own_s
        if idle_s and idle_since is not None and now - idle_since >= idle_s:
            source = (
                "idle_timeout" if own_s is not None else "site idle timeout, podServerIdleTimeout"
            )
            self.request_stop(R.DONE, f"no client activity for {idle_s:g} s ({source})")
        if str(self.scheduler.status.name) in ("closing", "closed", "failed"):
            self.request_stop(R.FAILED, "the Dask scheduler stopped")
        if self.scaling.elastic:
            self.converge()

    def scale(self, n: int) -> None:
        """The owner's ``scale(n)``: keep ``n`` workers, published and retired at once."""
        self.scaling.scale(n)
        self._resized()

    def adapt(self, minimum: int, maximum: int) -> None:
        """The owner's ``adapt``: follow Dask's adaptive target within the bounds."""
        self.scaling.adapt(minimum, maximum)
        self._resized()

    def _resized(self) -> None:
        self.places.max_workers = self.scaling.ceiling
        self.publication.static[MasterParam.MAX_WORKERS] = self.scaling.ceiling
        self._last_retire = 0.0  # the owner asked: no cool-down
        log.info(
            "broker.scaling",
            mode=self.scaling.mode,
            target=self.scaling.target(self.scheduler),
            minimum=self.scaling.minimum,
            maximum=self.scaling.maximum,
        )
        self.converge()
        self.changed()

    def converge(self) -> None:
        """Move the target (what is published) and retire the surplus gracefully."""
        target = self.scaling.target(self.scheduler)
        if target != self.target:
            self.target = target
            self.places.limit = target
            self.changed()
        if time.monotonic() - self._last_retire < RETIRE_COOLDOWN_S:
            return
        retiring = self.scaling.to_retire(self.scheduler, target)
        if retiring:
            self._last_retire = time.monotonic()
            log.info("broker.scale_down", target=target, retiring=retiring)
            self.spawn(self._retire(retiring), "broker-retire")

    async def _retire(self, addresses: list[str]) -> None:
        # retire_workers moves the results they hold to the others before closing them.
        await self.scheduler.retire_workers(workers=addresses, close_workers=True)

    # -- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Shut down in order: attaches, publication, workers, scheduler, final report."""
        if self.final is None:
            self.request_stop(R.DONE, "the broker was stopped")
        assert self.final is not None
        state, reason = self.final
        self.places.open = False
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.shutdown_timeout_s)
        log.debug("broker.shutdown_step", step="loops stopped")
        timeout_s = self.settings.shutdown_timeout_s
        if self.attach_url is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.publish_once(force=True), timeout_s)
        log.debug("broker.shutdown_step", step="published")
        await self._close_scheduler(timeout_s)
        log.debug("broker.shutdown_step", step="scheduler closed")
        for task in list(self._side_tasks):
            task.cancel()
        if self.attach_url is not None and not self._mq_final:
            await self._final_report(state, timeout_s)
        log.info("broker.stopped", request_id=self.record.id, state=state, reason=reason)

    async def _close_scheduler(self, timeout_s: float) -> None:
        if self.scheduler is None:
            return
        try:
            if self.scheduler.workers:
                await asyncio.wait_for(self.scheduler.retire_workers(close_workers=True), timeout_s)
        except (TimeoutError, OSError) as e:
            log.warning("broker.retire_incomplete", error=repr(e))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.scheduler.close(), timeout_s)
        if self.dashboard_socket is not None:
            dashboard_server.remove(self.dashboard_socket)

    async def _final_report(self, state: RequestState, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.reporter.report(state, []), timeout_s)
        except (TimeoutError, RequestGone) as e:
            log.warning("broker.final_report_failed", state=state, error=repr(e))
