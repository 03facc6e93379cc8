"""The master queue's storage API: the only code that talks SQL (through the modules it calls).

Build it from an ``AsyncEngine`` (``Store(engine)``) or a URL (``await Store.connect(url)``);
call :meth:`Store.migrate` once at start-up. Every method is one transaction, retried whole on
transient database errors (see :mod:`podgrid.masterqueue.db`), and raises the domain errors of
:mod:`podgrid.masterqueue.errors`. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from podgrid.config.request import ServerRequest
from podgrid.masterqueue import counts, hosts, jobs, matcher, requests, sweeps, tokens
from podgrid.masterqueue._rows import (
    job_record,
    job_timeline,
    load_job,
    load_request,
    request_record,
    request_timeline,
)
from podgrid.masterqueue.db import (
    DB_RETRY_DEADLINE_S,
    Database,
    create_engine,
    epoch_ms,
    from_ms,
)
from podgrid.masterqueue.hosts import MasterHost
from podgrid.masterqueue.migrate import migrate
from podgrid.masterqueue.models import Principal
from podgrid.masterqueue.sweeps import Swept
from podgrid.masterqueue.watch import RequestWatch
from podgrid.protocol import (
    Claim,
    ConnectionInfo,
    JobEvent,
    JobRecord,
    JobSpec,
    JobState,
    RequestEvent,
    RequestRecord,
    RequestState,
    Role,
    SlotDescription,
    WorkerInfo,
)
from podgrid.protocol.api import TokenInfo


def _now(now: datetime | None) -> int:
    return epoch_ms(now if now is not None else datetime.now(UTC))


class Store:
    """Requests, jobs, tokens and hosts on MariaDB or SQLite; safe to share between tasks."""

    def __init__(
        self, engine: AsyncEngine, *, retry_deadline_s: float = DB_RETRY_DEADLINE_S
    ) -> None:
        self.engine = engine
        self._db = Database(engine, retry_deadline_s=retry_deadline_s)
        self.watch = RequestWatch()  # long-polls of this process wait here

    @classmethod
    async def connect(
        cls, url: str, *, pool_size: int = 10, retry_deadline_s: float = DB_RETRY_DEADLINE_S
    ) -> Store:
        """A store on a new engine for ``mysql+aiomysql://…`` or ``sqlite+aiosqlite:///…``.

        Transient database errors are retried for up to ``retry_deadline_s`` seconds per call,
        then surface as DatabaseUnavailable.
        """
        return cls(create_engine(url, pool_size=pool_size), retry_deadline_s=retry_deadline_s)

    async def migrate(self) -> None:
        """Create or upgrade the schema (idempotent; run on every ``serve``)."""
        await migrate(self.engine)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    # -- tokens ---------------------------------------------------------------------------
    async def create_token(
        self,
        role: Role,
        name: str,
        request_id: int | None = None,
        expires_in_s: int | None = None,
    ) -> str:
        """A new token (plaintext, shown once; only its SHA-256 is stored).

        ``request_id`` makes a per-request broker token (role must be ``broker``);
        ``expires_in_s`` (None: never) makes it stop working that many seconds from now.
        """
        return (await self.issue_token(role, name, request_id, expires_in_s))[0]

    async def issue_token(
        self,
        role: Role,
        name: str,
        request_id: int | None = None,
        expires_in_s: int | None = None,
    ) -> tuple[str, TokenInfo]:
        """Like :meth:`create_token`, with the new token's record (its id, its expiry)."""
        return await self._db.run(
            lambda c: tokens.issue(c, role, name, request_id, expires_in_s), name="create_token"
        )

    async def authenticate(self, token: str) -> Principal | None:
        """The principal holding ``token``, or None (unknown, revoked or expired)."""
        return await self._db.run(lambda c: tokens.authenticate(c, token), write=False)

    async def lookup_token(self, token: str) -> tuple[Principal, datetime | None] | None:
        """The principal holding ``token`` and when the token expires (None: never)."""
        found = await self._db.run(lambda c: tokens.lookup(c, token), write=False)
        return None if found is None else (found[0], from_ms(found[1]))

    async def list_tokens(
        self, limit: int = 50, after_id: int | None = None, name: str | None = None
    ) -> list[TokenInfo]:
        """Token records by id ascending (never a token or its digest)."""
        return await self._db.run(lambda c: tokens.listing(c, limit, after_id, name), write=False)

    async def revoke_token(self, token_id: int) -> TokenInfo:
        """Revoke a token at once (RecordNotFound if there is none with that id)."""
        return await self._db.run(lambda c: tokens.revoke(c, token_id), name="revoke_token")

    async def has_tokens(self) -> bool:
        """Whether any token exists (the first ``serve`` creates the admin token)."""
        return await self._db.run(tokens.any_exist, write=False)

    # -- requests -------------------------------------------------------------------------
    async def submit_request(
        self,
        owner: str,
        request: ServerRequest,
        source_text: str,
        idempotency_key: str | None = None,
    ) -> RequestRecord:
        """Store a WAITING request; a repeated ``idempotency_key`` returns the first record.

        Raises IdempotencyConflict when the key was used by this owner for a different source text.
        """

        async def work(c: AsyncConnection) -> RequestRecord:
            return await requests.submit(c, owner, request, source_text, idempotency_key)

        return await self._db.run_idempotent(work, name="submit_request")

    async def get_request(self, request_id: int) -> RequestRecord:
        """One request (RecordNotFound if missing); check ``owner`` before showing it."""

        async def work(c: AsyncConnection) -> RequestRecord:
            return request_record(await load_request(c, request_id))

        return await self._db.run(work, write=False)

    async def list_requests(
        self,
        owner: str | None = None,
        states: Sequence[RequestState] | None = None,
        limit: int = 50,
        after_id: int | None = None,
    ) -> list[RequestRecord]:
        """Requests by id ascending; page with ``after_id`` = the last id of the previous page."""
        return await self._db.run(
            lambda c: requests.listing(c, owner, states, limit, after_id), write=False
        )

    async def request_events(self, request_id: int) -> list[RequestEvent]:
        """The request's timeline, oldest first."""
        return await self._db.run(lambda c: request_timeline(c, request_id), write=False)

    async def transition(
        self,
        request_id: int,
        to_state: RequestState,
        reason: str | None = None,
        *,
        expected: RequestState | None = None,
        master_host: str | None = None,
    ) -> RequestRecord:
        """Move a request to ``to_state`` (IllegalTransition if not legal from where it is).

        ``expected`` makes it a compare-and-set on a known state (the launcher passes WAITING so
        two launchers never both start a broker); ``master_host`` records where it runs.
        """
        record = await self._db.run(
            lambda c: requests.transition(c, request_id, to_state, reason, expected, master_host),
            name="transition",
        )
        self.watch.changed(request_id)
        return record

    async def broker_report(
        self,
        request_id: int,
        state: RequestState,
        workers: Sequence[WorkerInfo],
        address: str | None = None,
        connection: ConnectionInfo | None = None,
    ) -> RequestRecord:
        """A broker heartbeat: state (may skip ahead along the main chain), workers, address."""
        record = await self._db.run(
            lambda c: requests.broker_report(c, request_id, state, workers, address, connection),
            name="broker_report",
        )
        self.watch.changed(request_id)
        return record

    async def cancel_request(self, request_id: int, owner: str | None) -> RequestRecord:
        """CANCELLED; NotOwner if ``owner`` differs (``owner=None``: an admin)."""
        record = await self._db.run(lambda c: requests.cancel(c, request_id, owner), name="cancel")
        self.watch.changed(request_id)
        return record

    # -- jobs -----------------------------------------------------------------------------
    async def submit_job(
        self, owner: str, spec: JobSpec, idempotency_key: str | None = None
    ) -> JobRecord:
        """Store a WAITING job; a repeated ``idempotency_key`` returns the first record."""

        async def work(c: AsyncConnection) -> JobRecord:
            return await jobs.submit(c, owner, spec, idempotency_key)

        return await self._db.run_idempotent(work, name="submit_job")

    async def submit_jobs(self, owner: str, specs: Sequence[JobSpec]) -> list[int]:
        """Store many WAITING jobs in one transaction (bulk loads, benchmarks); their ids."""
        return await self._db.run(lambda c: jobs.submit_many(c, owner, specs), name="submit_jobs")

    async def get_job(self, job_id: int) -> JobRecord:
        """One job (RecordNotFound if missing)."""

        async def work(c: AsyncConnection) -> JobRecord:
            return job_record(await load_job(c, job_id))

        return await self._db.run(work, write=False)

    async def list_jobs(
        self,
        owner: str | None = None,
        states: Sequence[JobState] | None = None,
        limit: int = 50,
        after_id: int | None = None,
    ) -> list[JobRecord]:
        """Jobs by id ascending; page with ``after_id``."""
        return await self._db.run(
            lambda c: jobs.listing(c, owner, states, limit, after_id), write=False
        )

    async def job_events(self, job_id: int) -> list[JobEvent]:
        """The job's history (every state change and the agent involved), oldest first."""
        return await self._db.run(lambda c: job_timeline(c, job_id), write=False)

    async def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(requests by state, jobs by state), for the metrics gauges."""
        return await self._db.run(counts.state_counts, write=False)

    async def claim_job(self, slot: SlotDescription, lease_s: float) -> Claim | None:
        """Atomically assign the best job ``slot`` can run (priority, then age); None if none.

        One lease token for every attempt: when a retry follows a COMMIT whose answer was lost,
        it finds the job the first attempt assigned and returns that claim, rather than
        assigning a second job and leaving the first ASSIGNED until its lease expires.
        """
        token = matcher.new_lease_token()
        attempts = 0

        async def work(c: AsyncConnection) -> Claim | None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # only a retry can find its own commit: the hot path skips this
                done = await matcher.claimed_with(c, slot, token)
                if done is not None:
                    return done
            return await matcher.claim(c, slot, lease_s, token)

        return await self._db.run(work, name="claim_job")

    async def heartbeat_job(
        self, job_id: int, lease_token: str, state: JobState = JobState.RUNNING
    ) -> datetime:
        """Renew the lease (STARTED or RUNNING); the new expiry. StaleLease if it was lost."""

        async def work(c: AsyncConnection) -> datetime:
            job = await jobs.heartbeat(c, job_id, lease_token, state)
            assert job.lease_expires_at is not None
            return job.lease_expires_at

        return await self._db.run(work, name="heartbeat_job")

    async def finish_job(self, job_id: int, lease_token: str, exit_code: int) -> JobRecord:
        """DONE (exit 0) or ERROR_E; StaleLease if the lease was lost; repeatable."""
        return await self._db.run(
            lambda c: jobs.finish(c, job_id, lease_token, exit_code), name="finish_job"
        )

    async def release_job(self, job_id: int, lease_token: str, reason: str) -> JobRecord:
        """Back to WAITING without using an attempt (agent shut down); StaleLease if lost."""
        return await self._db.run(
            lambda c: jobs.release(c, job_id, lease_token, reason), name="release_job"
        )

    async def kill_job(self, job_id: int, owner: str | None) -> JobRecord:
        """KILLED; NotOwner if ``owner`` differs (``owner=None``: an admin)."""
        return await self._db.run(lambda c: jobs.kill(c, job_id, owner), name="kill_job")

    # -- sweeps ---------------------------------------------------------------------------
    async def expire_leases(self, now: datetime | None = None) -> list[Swept]:
        """Jobs whose lease ran out go back to WAITING (attempts left) or EXPIRED."""
        at = _now(now)
        return await self._db.run(lambda c: sweeps.expire_leases(c, at), name="expire_leases")

    async def expire_requests(
        self, now: datetime | None = None, heartbeat_timeout_s: float = 60.0
    ) -> list[Swept]:
        """EXPIRED (ttl over; max_wait without min_workers) or FAILED (broker heartbeat lost)."""
        at, timeout_ms = _now(now), int(heartbeat_timeout_s * 1000)
        swept = await self._db.run(
            lambda c: sweeps.expire_requests(c, at, timeout_ms), name="expire_requests"
        )
        for item in swept:
            self.watch.changed(item.id)
        return swept

    async def purge_finished(self, older_than: datetime) -> tuple[int, int]:
        """Delete final requests and jobs not changed since ``older_than``: (requests, jobs)."""
        at = epoch_ms(older_than)
        return await self._db.run(lambda c: sweeps.purge_finished(c, at), name="purge_finished")

    # -- master hosts ---------------------------------------------------------------------
    async def upsert_master_host(
        self, name: str, address: str, launcher: str = "local", enabled: bool = True
    ) -> MasterHost:
        """Register (or update) a master host the launcher may use."""
        return await self._db.run(lambda c: hosts.upsert(c, name, address, launcher, enabled))

    async def list_master_hosts(self, enabled_only: bool = False) -> list[MasterHost]:
        """Known master hosts by name."""
        return await self._db.run(
            lambda c: hosts.listing(c, enabled_only=enabled_only), write=False
        )
