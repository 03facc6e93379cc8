"""The extended job agent (xJA): a small explicit state machine over one batch slot.

POLLING (a window of at most x s, see :mod:`podgrid.jobagent.poller`) → a fitting server: ATTACHING
(candidates in weighted random order; a refusal moves on) → WORKER (a ``dask worker`` until
it ends; after ``podWorkerIdleTimeout`` s without a task it retires itself, and that server is
left alone for as long) → detach → POLLING. Nothing within x s → the fallback: ``batch`` takes
jobs from the master queue (BATCH) as long as there are some, checking the registry between
jobs; ``exit`` ends the agent. SIGTERM or the slot's end → EXITING: the worker is retired, a
batch job gets its grace period, everything is reported, the agent exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from podgrid.config.refresher import ConfigRefresher
from podgrid.config.runtime import wait_event
from podgrid.config.settings import PodSettings
from podgrid.errors import CallFailed
from podgrid.jobagent import attach as attach_api
from podgrid.jobagent.attach import BrokerPass
from podgrid.jobagent.batch import BatchLimits, BatchRunner
from podgrid.jobagent.forkserver import ForkServer
from podgrid.jobagent.payload import Payload
from podgrid.jobagent.poller import ServerPoller
from podgrid.jobagent.servers import ServerOffer, weighted_order
from podgrid.jobagent.settings import MAX_BACKOFF_S, AgentSettings
from podgrid.jobagent.slot import Slot
from podgrid.jobagent.status import Accounting, Activity, AgentState, StatusReporter
from podgrid.jobagent.vouch import Vouchers
from podgrid.jobagent.worker import WorkerRun, worker_environment
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import AttachGrant, Claim

log = structlog.get_logger("podgrid.jobagent")


@dataclass
class Tally:
    """What the agent did, for its final log line and for tests."""

    windows: int = 0
    attaches: int = 0
    refusals: int = 0
    workers: int = 0
    batch_jobs: int = 0
    match_failures: int = 0


class Agent:
    """One agent on one slot; :meth:`run` returns when it has exited cleanly."""

    def __init__(
        self,
        settings: AgentSettings,
        slot: Slot,
        config: ConfigRefresher,
        poller: ServerPoller,
        masterqueue: MasterQueueClient,
        session: aiohttp.ClientSession,
        reporter_factory: Callable[[Accounting], StatusReporter],
        payload: Payload | None = None,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.config = config
        self.poller = poller
        self.masterqueue = masterqueue
        self.session = session
        self.accounting = Accounting()
        self.status = reporter_factory(self.accounting)
        self.payload = payload or Payload()  # who runs workers and batch jobs
        self.batch = BatchRunner(
            masterqueue, settings.state_dir / "sandboxes", slot.agent_id, self.payload
        )
        self.vouchers = Vouchers(masterqueue)
        self.rng = random.Random(settings.seed)  # noqa: S311 - spreading load, not security
        self.stopping = asyncio.Event()
        self.interrupt = asyncio.Event()  # config changed or stop: cut a waiting poll short
        self.stop_reason: str | None = None
        self.state = AgentState.POLLING
        self.tally = Tally()
        self._refused: dict[str, float] = {}
        self._failures = 0
        self.forks: ForkServer | None = None
        if settings.fork_workers:
            zygote_dir = settings.state_dir / "zygote"
            self.forks = ForkServer(
                worker_environment(zygote_dir), zygote_dir, settings.state_dir / "zygote.log"
            )

    @property
    def pod(self) -> PodSettings:
        """The live configuration (re-read every podConfigRefresh seconds)."""
        return self.config.current.settings

    def request_stop(self, reason: str) -> None:
        """Begin a clean exit (SIGTERM, the slot's end, or the fallback ``exit``)."""
        if not self.stopping.is_set():
            self.stop_reason = reason
            log.info("jobagent.stopping", reason=reason, state=self.state.value)
            self.stopping.set()
            self.interrupt.set()

    def config_changed(self, *_: Any) -> None:
        """A refresh changed the configuration: let a running poll window re-read it."""
        self.interrupt.set()

    def _enter(self, state: AgentState, activity: Activity, **fields: Any) -> None:
        self.state = state
        self.accounting.switch(activity)
        self.status.update(State=state.value, **fields)

    async def run(self) -> int:
        """The agent's life: loop until stopped, then exit cleanly; the exit code (0)."""
        self.status.start()
        if self.forks is not None:
            try:
                await self.forks.start()  # Dask is imported there while we poll
            except OSError as e:
                log.warning("jobagent.forkserver_unavailable", error=str(e))
                self.forks = None
        ttl_watch = asyncio.create_task(self._watch_ttl())
        log.info(
            "jobagent.started",
            agent_id=self.slot.agent_id,
            site=self.slot.site,
            ce=self.slot.ce,
            cores=self.slot.cores,
            memory_mb=self.slot.memory_mb,
            ttl_s=int(self.slot.remaining_s()),
            sources=self.slot.sources,
        )
        try:
            await self._loop()
        finally:
            ttl_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ttl_watch
            self._enter(AgentState.EXITING, "idle", Server="", JobId=0)
            if self.forks is not None:
                await self.forks.close()
            self.accounting.flush()
            await self.status.stop()
            seconds = {k: round(v, 3) for k, v in self.accounting.seconds.items()}
            log.info(
                "jobagent.exited", reason=self.stop_reason, tally=vars(self.tally), seconds=seconds
            )
        return 0

    async def _watch_ttl(self) -> None:
        await asyncio.sleep(max(0.0, self.slot.remaining_s() - self.settings.exit_margin_s))
        self.request_stop("slot_ttl")

    async def _loop(self) -> None:
        offers: list[ServerOffer] = []
        while not self.stopping.is_set():
            if not offers:
                offers = await self._poll_window()
            if self.stopping.is_set():
                return
            if offers:
                await self._attach_any(offers)
                offers = []
                continue
            if self.pod.fallback == "exit":
                self.request_stop("fallback_exit")
                return
            offers = await self._batch_round()

    async def _poll_window(self) -> list[ServerOffer]:
        self._enter(AgentState.POLLING, "polling", Server="", JobId=0)
        self.tally.windows += 1
        now = time.monotonic()
        self._refused = {k: t for k, t in self._refused.items() if t > now}
        offers = await self.poller.window(
            self.slot, lambda: self.pod, self.interrupt, self.stopping, exclude=self._excluded
        )
        log.debug("jobagent.window_ended", offers=[o.request_id for o in offers])
        return offers

    def _excluded(self, offer: ServerOffer) -> bool:
        return self._refused.get(offer.request_id, 0.0) > time.monotonic()

    async def _attach_any(self, offers: list[ServerOffer]) -> bool:
        """Try the candidates in weighted random order; run a worker for the first grant."""
        for offer in weighted_order(offers, self.rng):
            if self.stopping.is_set():
                return False
            broker = await self.vouchers.genuine(offer.request_id, offer.address)
            if broker is None:
                self._refused[offer.request_id] = time.monotonic() + self.settings.refused_s
                continue  # not a server of this grid: we never talk to it
            self._enter(AgentState.ATTACHING, "worker", Server=offer.request_id, JobId=0)
            started = time.monotonic()
            slot = self.slot.description()
            slot = slot.model_copy(
                update={"ttl_s": max(1, slot.ttl_s - int(self.settings.exit_margin_s))}
            )
            try:
                grant = await attach_api.attach(self.session, offer.address, broker, slot)
            except attach_api.AttachRefused as e:
                self.tally.refusals += 1
                self._refused[offer.request_id] = time.monotonic() + self.settings.refused_s
                log.info(
                    "jobagent.attach_refused",
                    server=offer.request_id,
                    reason=e.reason,
                    status=e.status,
                    error=str(e),
                )
                continue
            self.tally.attaches += 1
            log.info(
                "jobagent.attach_granted",
                server=offer.request_id,
                name=grant.name,
                took_s=round(time.monotonic() - started, 4),
            )
            if self.stopping.is_set():
                await self._detach(offer, grant)  # stopped while asking: give the place back
                return False
            await self._run_worker(offer, grant, started, broker)
            return True
        return False

    async def _run_worker(
        self, offer: ServerOffer, grant: AttachGrant, started: float, broker: BrokerPass
    ) -> None:
        idle_timeout_s = float(self.pod.worker_idle_timeout_s)  # read per worker: refreshes apply
        run = WorkerRun(
            grant,
            self.settings.state_dir / "workers" / _safe(grant.name),
            death_timeout_s=float(self.pod.attach_timeout_s),
            idle_timeout_s=idle_timeout_s,
            payload=self.payload,
            forks=self.forks,
        )
        try:
            await run.start()
        except OSError as e:
            log.error("jobagent.worker_start_failed", name=grant.name, error=str(e))
            await self._detach(offer, grant)
            return
        self.tally.workers += 1
        self._enter(AgentState.WORKER, "worker", Server=offer.request_id, JobId=0)
        self.status.extra["last_worker"] = {"server": offer.request_id, "name": grant.name}
        registered = asyncio.create_task(self._note_registered(run, offer, started))
        end = await run.supervise(
            self.stopping,
            lambda: attach_api.alive(self.session, offer.address, broker),
            self.settings.heartbeat_s,
            started,
        )
        registered.cancel()
        if end.reason == "stopped":
            # Graceful: the broker retires the worker, so Dask moves its data first.
            await self._detach(offer, grant)
            await run.wait_exit(self.settings.worker_stop_s)
        code = await run.stop(self.settings.grace_s)
        if end.reason in ("exited", "idle"):
            await self._detach(offer, grant)  # frees a reservation that never connected
        if end.reason == "idle":
            # The cluster did not use this slot: do not go straight back to it (it may well
            # still publish NeededWorkers); other servers or batch work get the slot first.
            self._refused[offer.request_id] = time.monotonic() + idle_timeout_s
            log.info(
                "jobagent.worker_idle",
                server=offer.request_id,
                name=grant.name,
                idle_timeout_s=idle_timeout_s,
            )
        log.info(
            "jobagent.worker_ended",
            server=offer.request_id,
            name=grant.name,
            reason=end.reason,
            exit_code=code,
            worked_s=round(time.monotonic() - started, 3),
        )

    async def _note_registered(self, run: WorkerRun, offer: ServerOffer, started: float) -> None:
        await run.registered.wait()
        took = time.monotonic() - started
        self.status.extra["last_worker"]["registered_s"] = round(took, 4)
        log.info(
            "jobagent.attached", server=offer.request_id, name=run.grant.name, took_s=round(took, 4)
        )

    async def _detach(self, offer: ServerOffer, grant: AttachGrant) -> None:
        # A fresh pass: the worker may have outlived the ticket it attached with. No pass
        # means the request is no longer active, and its broker frees the place by itself.
        broker = await self.vouchers.genuine(offer.request_id, offer.address)
        if broker is not None:
            await attach_api.detach(
                self.session, offer.address, broker, self.slot.agent_id, grant.name
            )

    async def _batch_round(self) -> list[ServerOffer]:
        """Take and run batch jobs while there are some; stop early when a server appears."""
        while not self.stopping.is_set():
            claim = await self._match()
            if claim is None:
                return []
            await self._run_batch(claim)
            if self.stopping.is_set():
                return []
            # Check the registry again before taking more batch work.
            self._enter(AgentState.POLLING, "polling", Server="", JobId=0)
            with contextlib.suppress(CallFailed):
                offers, _ = await self.poller.snapshot(self.slot, self.pod)
                offers = [o for o in offers if not self._excluded(o)]
                if offers:
                    return offers
        return []

    async def _match(self) -> Claim | None:
        slot = self.slot.description()
        left = self.slot.remaining_s() - self.settings.exit_margin_s - self.settings.grace_s
        if left < 1:
            return None
        slot = slot.model_copy(update={"ttl_s": int(left)})
        try:
            claim = await self.masterqueue.match(slot)
        except CallFailed as e:
            self._failures += 1
            self.tally.match_failures += 1
            pause = min(MAX_BACKOFF_S, 0.5 * 2 ** min(self._failures, 10))
            pause *= 0.5 + self.rng.random() / 2  # jitter: a crowd does not retry in step
            log.warning("jobagent.match_failed", error=str(e), pause_s=round(pause, 2))
            self.accounting.switch("idle")
            await wait_event(self.stopping, pause)
            return None
        self._failures = 0
        return claim

    async def _run_batch(self, claim: Claim) -> None:
        self.tally.batch_jobs += 1
        self._enter(AgentState.BATCH, "batch", Server="", JobId=claim.job.id)
        left = self.slot.remaining_s() - self.settings.exit_margin_s - self.settings.grace_s
        limits = BatchLimits(
            slot_left_s=max(0.0, left),
            grace_s=self.settings.grace_s,
            output_cap_bytes=self.settings.output_cap_bytes,
        )
        result = await self.batch.run(claim, limits, self.stopping)
        self.status.extra["last_job"] = {
            "id": result.job_id,
            "outcome": result.outcome,
            "exit_code": result.exit_code,
            "state": result.reported_state,
        }


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100] or "worker"
