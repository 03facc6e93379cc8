"""The worker hook: run one ``dask worker`` for a broker's grant, in its own process group.

The worker gets the grant's name, nthreads, memory limit and lifetime, and the TLS material
(written 0600 into a private directory). It ends when the cluster closes, retires it, its
lifetime is reached, it had no task for the agent's ``podWorkerIdleTimeout`` (the preload
:mod:`podgrid.jobagent.idle` retires it; the run ends as ``idle``), or the scheduler goes away
(a worker without nanny closes itself when its scheduler connection breaks; the agent also
probes the broker every heartbeat and stops the worker after two missed probes). The agent
stops it gracefully by asking the broker to retire it (Dask moves its data), then SIGTERM,
then SIGKILL of the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import structlog

from podgrid.config.runtime import write_private_file
from podgrid.jobagent import idle as idle_preload
from podgrid.jobagent.attach import WorkerGrant
from podgrid.jobagent.forkserver import ForkedProcess, ForkServer
from podgrid.jobagent.payload import Payload, base_environment
from podgrid.jobagent.processes import exit_status, spawn_supervised, stop_group
from podgrid.protocol import AttachGrant

log = structlog.get_logger("podgrid.jobagent")

REGISTERED_MARK: Final = "Registered to:"
MISSED_PROBES: Final = 2  # broker probes missed in a row before the worker is stopped
LOG_CAP_BYTES: Final = 5 * 1024 * 1024
FORK_READY_WAIT_S: Final = 10.0  # seconds a worker waits for a zygote still starting
OUTPUT_DRAIN_S: Final = 2.0  # seconds to read the rest of an ended worker's output
# Loaded by path, so the worker does not import the agent package (see podgrid.jobagent.idle).
IDLE_PRELOAD: Final = str(Path(idle_preload.__file__).resolve())
End = Literal["exited", "idle", "stopped", "broker_lost", "start_failed"]


@dataclass(frozen=True, slots=True)
class WorkerEnd:
    """How one worker run ended."""

    reason: End
    exit_code: int | None
    registered_after_s: float | None


def worker_command(
    grant: AttachGrant,
    tls_dir: Path,
    work_dir: Path,
    death_timeout_s: float,
    idle_timeout_s: float = 0.0,
) -> list[str]:
    """The ``dask worker`` argv for a grant (no nanny: the agent is the nanny).

    ``idle_timeout_s`` > 0 adds the idle preload, which retires the worker after that many
    seconds without a task (its options go last: dask takes what follows as preload argv).
    """
    argv = [
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        grant.scheduler_address,
        "--name",
        grant.name,
        "--nthreads",
        str(grant.nthreads),
        "--memory-limit",
        grant.memory_limit,
        "--lifetime",
        f"{grant.lifetime_s}s",
        "--no-nanny",
        "--no-dashboard",
        "--death-timeout",
        f"{death_timeout_s}s",
        "--tls-ca-file",
        str(tls_dir / "ca.pem"),
        "--tls-cert",
        str(tls_dir / "worker.pem"),
        "--tls-key",
        str(tls_dir / "worker.key"),
        "--local-directory",
        str(work_dir),
    ]
    if idle_timeout_s > 0:
        argv += ["--preload", IDLE_PRELOAD, "--idle-timeout", f"{idle_timeout_s:g}"]
    return argv


def worker_environment(run_dir: Path, source: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's allow-list environment: the user's tasks run in it, so no agent secret.

    PATH, HOME and TMPDIR in the run dir, locale, the slot's ``DASK_*`` config and
    ``PYTHONPATH`` when the slot sets one, the public ``PODGRID_SITE``/``CE``/``SLOT_PACKAGES``.
    """
    src = dict(os.environ) if source is None else source
    env = base_environment(run_dir / "home", run_dir / "tmp", src)
    if src.get("PYTHONPATH"):
        env["PYTHONPATH"] = src["PYTHONPATH"]
    return env


def write_tls(grant: AttachGrant, tls_dir: Path) -> None:
    """The worker's CA, certificate and private key files, private to this user (0700/0600).

    The key is the one this agent made for the attach CSR (a :class:`WorkerGrant`); a grant
    without one cannot run a worker (brokers never send keys).
    """
    if not isinstance(grant, WorkerGrant):
        raise TypeError(f"grant {grant.name!r} carries no private key made by this agent")
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(tls_dir, 0o700)
    for name, text in (
        ("ca.pem", grant.tls_ca),
        ("worker.pem", grant.tls_cert),
        ("worker.key", grant.tls_key),
    ):
        write_private_file(tls_dir / name, text)


async def _follow(
    stream: asyncio.StreamReader, log_path: Path, registered: asyncio.Event, idle: asyncio.Event
) -> None:
    """Copy the worker's output to its log (capped); notice its registration and idle lines."""
    written = 0
    with log_path.open("ab") as out:
        while line := await stream.readline():
            if not registered.is_set() and REGISTERED_MARK.encode() in line:
                registered.set()
            if not idle.is_set() and idle_preload.IDLE_MARK.encode() in line:
                idle.set()
            if written < LOG_CAP_BYTES:
                out.write(line)
                out.flush()
                written += len(line)


class WorkerRun:
    """One ``dask worker`` process for one grant; ``idle_timeout_s`` 0: never retired idle."""

    def __init__(
        self,
        grant: AttachGrant,
        run_dir: Path,
        *,
        death_timeout_s: float,
        idle_timeout_s: float = 0.0,
        payload: Payload | None = None,
        forks: ForkServer | None = None,
    ) -> None:
        self.grant = grant
        self.payload = payload or Payload()
        self.forks = forks  # start by forking from the agent's zygote when it is ready
        self.run_dir = run_dir
        self.death_timeout_s = death_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.process: asyncio.subprocess.Process | ForkedProcess | None = None
        self.forked = False
        self.registered = asyncio.Event()
        self.retired_idle = asyncio.Event()  # the worker said it retires for want of tasks
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Write the credentials and start the worker (supervised, its own session/process group).

        The worker gets :func:`worker_environment` only, and runs as the payload user when
        the agent has one: its TLS files are then handed to that user, the directories it
        writes (``work``, ``home``, ``tmp``) are its own, and the run dir and ``worker.log``
        stay the agent's.
        """
        tls_dir, work_dir = self.run_dir / "tls", self.run_dir / "work"
        write_tls(self.grant, tls_dir)
        for d in (work_dir, self.run_dir / "home", self.run_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
            self.payload.chown(d)
        if self.payload.isolated:
            for f in tls_dir.iterdir():
                self.payload.chown(f)
            os.chmod(tls_dir, 0o711)  # noqa: S103 - enter only; the files are the payload's 0600
        argv = worker_command(
            self.grant, tls_dir, work_dir, self.death_timeout_s, self.idle_timeout_s
        )
        env = worker_environment(self.run_dir)
        if self.forks is not None and self.forks.starting:
            # Still importing Dask: as quick as a cold start, and without a second import.
            await self.forks.wait_ready(FORK_READY_WAIT_S)
        if self.forks is not None and self.forks.alive:
            try:
                self.process = await self.forks.spawn(
                    argv[3:],  # without "python -m distributed.cli.dask_worker"
                    env=env,
                    cwd=self.run_dir,
                    user=self.payload.uid,
                    group=self.payload.gid,
                )
                self.forked = True
            except OSError as e:
                log.warning("jobagent.fork_failed", name=self.grant.name, error=str(e))
        if self.process is None:
            # Cold, under the supervisor like a batch job: the worker dies with this agent,
            # SIGKILL included (PR_SET_PDEATHSIG), and never sees the agent's environment.
            self.process = await spawn_supervised(
                argv,
                env=env,
                cwd=self.run_dir,
                user=self.payload.uid,
                group=self.payload.gid,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        assert self.process.stdout is not None
        self._follower = asyncio.create_task(
            _follow(
                self.process.stdout, self.run_dir / "worker.log", self.registered, self.retired_idle
            )
        )
        log.info(
            "jobagent.worker_started",
            name=self.grant.name,
            pid=self.process.pid,
            forked=self.forked,
            scheduler=self.grant.scheduler_address,
            idle_timeout_s=self.idle_timeout_s,
        )

    async def supervise(
        self,
        stopping: asyncio.Event,
        probe: Callable[[], Awaitable[bool]],
        heartbeat_s: float,
        started_at: float,
    ) -> WorkerEnd:
        """Wait for the worker to end, the agent to stop, or the broker to vanish."""
        assert self.process is not None
        ended = asyncio.create_task(self.process.wait())
        stop = asyncio.create_task(stopping.wait())
        registered_after: float | None = None
        missed = 0
        try:
            while True:
                done, _ = await asyncio.wait(
                    {ended, stop}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                if registered_after is None and self.registered.is_set():
                    registered_after = time.monotonic() - started_at
                if ended in done:
                    code = exit_status(ended.result())
                    reason: End = "idle" if await self._said_idle() else "exited"
                    return WorkerEnd(reason, code, registered_after)
                if stop in done:
                    return WorkerEnd("stopped", None, registered_after)
                missed = 0 if await probe() else missed + 1
                if missed >= MISSED_PROBES:
                    log.warning("jobagent.broker_lost", name=self.grant.name, missed=missed)
                    return WorkerEnd("broker_lost", None, registered_after)
        finally:
            stop.cancel()
            if not ended.done():
                ended.cancel()

    async def _said_idle(self) -> bool:
        """Whether the ended worker retired itself as idle (its last output read first)."""
        if self._follower is not None and not self.retired_idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._follower), OUTPUT_DRAIN_S)
        return self.retired_idle.is_set()

    async def wait_registered(self, timeout_s: float) -> bool:
        """Whether the worker registered with its scheduler within ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.registered.wait(), timeout_s)
        return self.registered.is_set()

    async def stop(self, grace_s: float) -> int | None:
        """Stop the worker's whole group (SIGTERM, SIGKILL after ``grace_s``); its exit code."""
        if self.process is None:
            return None
        code = await stop_group(self.process, grace_s)
        if self._follower is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._follower, 5.0)
        return exit_status(code)

    async def wait_exit(self, timeout_s: float) -> bool:
        """Whether the worker exited by itself within ``timeout_s``."""
        if self.process is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout_s)
        return self.process.returncode is not None
