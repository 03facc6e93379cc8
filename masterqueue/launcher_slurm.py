"""The ``slurm`` launcher: each broker is a Slurm job on a dedicated partition.

A dedicated CE for fast start-up: the site keeps a partition (a few nodes, short queue) for
PoD servers, and the master queue ``sbatch``\\ es ``<broker command> --request-id ID
--masterqueue URL`` there. The job script ``exec``\\ s the broker, so the broker is the batch
shell: :meth:`SlurmLauncher.terminate` (``scancel --batch --signal=TERM``) reaches it alone
and it drains; :meth:`SlurmLauncher.kill` is a plain ``scancel`` (SIGKILL after Slurm's
``KillWait``). The broker's address reaches the master queue through its own state report,
as with every launcher.

The environment is the one :class:`~podgrid.masterqueue.launcher.LocalLauncher` builds: this
process's, plus PODGRID_URL and the registry URL, the per-request token in PODGRID_TOKEN and,
given the sign key, the request's sign secret; never a sign secret of our own. It goes to
``sbatch`` as sbatch's own environment with ``--export=ALL`` (Slurm keeps it with the job,
readable by the job's owner and the Slurm admins only), never in argv or the job script.
:attr:`LaunchHandle.pid` and ``pgid`` hold the Slurm job id.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from podgrid.masterqueue.launcher import (
    EXIT_UNKNOWN,
    TOKEN_ENV,
    URL_ENV,
    LaunchHandle,
    clean_reason,
    describe_code,
    log_tail,
)
from podgrid.masterqueue.signing import SIGN_SECRET_ENV, sign_secret
from podgrid.protocol import RequestRecord
from podgrid.slurmctl import JobInfo, SlurmCommands, SlurmError, batch_script, time_limit

JOB_NAME_PREFIX: Final = "podgrid-broker-"
REFRESH_S: Final = 1.0  # seconds one squeue answer serves every broker's exit_code
TIME_MARGIN_S: Final = 120  # seconds the job's limit exceeds the request's TTL (clean shutdown)


class SlurmLauncher:
    """Brokers as Slurm jobs on ``partition``; one ``squeue`` per second for all of them."""

    def __init__(
        self,
        command: Sequence[str],
        log_dir: Path,
        *,
        partition: str | None,
        account: str | None = None,
        directives: Sequence[str] = (),
        env_script: str | None = None,
        wall_time_s: float | None = None,
        sign_key: bytes | None = None,
        commands: SlurmCommands | None = None,
    ) -> None:
        self.command = list(command)
        self.log_dir = log_dir
        self.partition = partition
        self.account = account
        self.directives = list(directives)
        self.env_script = env_script
        self.wall_time_s = wall_time_s  # None: the request's TTL
        self.sign_key = sign_key
        self.commands = commands or SlurmCommands()
        self._snapshot: dict[str, JobInfo] = {}
        self._snapshot_at = -math.inf
        self._names: dict[str, str] = {}  # job id -> job name

    def pick_host(self) -> str:
        """``slurm:<partition>``: the node is Slurm's choice (the broker reports its address)."""
        return f"slurm:{self.partition or 'default'}"

    def _environment(
        self, request: RequestRecord, broker_token: str, env: Mapping[str, str]
    ) -> dict[str, str]:
        child_env = {**os.environ, **env, TOKEN_ENV: broker_token}
        child_env.pop(SIGN_SECRET_ENV, None)  # never a secret of our own environment
        if self.sign_key is not None:
            child_env[SIGN_SECRET_ENV] = sign_secret(self.sign_key, request.id)
        return child_env

    def _script(self, request: RequestRecord, url: str, log_path: Path) -> str:
        argv = [*self.command, "--request-id", str(request.id), "--masterqueue", url]
        body = [f"exec >>{shlex.quote(str(log_path))} 2>&1"]
        if self.env_script:
            body.append(f". {shlex.quote(self.env_script)} || exit 1")
        body.append(f"exec {shlex.join(argv)}")
        return batch_script(self.directives, body)

    def _args(self, request: RequestRecord) -> list[str]:
        wall_s = self.wall_time_s
        if wall_s is None:
            wall_s = request.request.ttl_s + TIME_MARGIN_S
        args = [
            f"--job-name={JOB_NAME_PREFIX}{request.id}",
            f"--output={self.log_dir / f'{request.id}.slurm.out'}",
            f"--chdir={self.log_dir}",
            "--no-requeue",
            f"--time={time_limit(wall_s)}",
        ]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.account:
            args.append(f"--account={self.account}")
        return args

    async def start(
        self, request: RequestRecord, broker_token: str, env: Mapping[str, str], host: str
    ) -> LaunchHandle:
        """``sbatch`` the broker; OSError (SubmitRefused) when Slurm does not take it."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{request.id}.log"
        script = self._script(request, env[URL_ENV], log_path)
        child_env = self._environment(request, broker_token, env)
        job_id = await self.commands.submit(script, self._args(request), child_env)
        self._names[job_id] = f"{JOB_NAME_PREFIX}{request.id}"
        return LaunchHandle(
            request_id=request.id,
            host=host,
            pid=int(job_id),
            pgid=int(job_id),
            log_path=log_path,
        )

    async def _job(self, handle: LaunchHandle) -> JobInfo | None:
        """The broker's job as of at most :data:`REFRESH_S` ago; None if Slurm does not say."""
        key = str(handle.pid)
        now = time.monotonic()
        if now - self._snapshot_at >= REFRESH_S or key not in self._snapshot:
            names = set(self._names.values()) | {f"{JOB_NAME_PREFIX}{handle.request_id}"}
            self._snapshot = await self.commands.jobs(names=names)
            self._snapshot_at = now
        info = self._snapshot.get(key)
        return info if info is not None else await self.commands.accounted(key)

    async def exit_code(self, handle: LaunchHandle) -> int | None:
        """None while the job waits or runs (or slurmctld does not answer); then its code."""
        try:
            info = await self._job(handle)
        except SlurmError:
            return None
        if info is not None and info.live:
            return None
        self._names.pop(str(handle.pid), None)
        if info is None or info.wait_status is None:
            return EXIT_UNKNOWN
        if info.wait_status & 0x7F:
            return -(info.wait_status & 0x7F)
        return (info.wait_status >> 8) & 0xFF

    async def terminate(self, handle: LaunchHandle) -> None:
        """SIGTERM to the broker (the batch shell); a job still queued is cancelled."""
        try:
            info = await self._job(handle)
            queued = info is None or info.queued
            await self.commands.cancel([str(handle.pid)], signal=None if queued else "TERM")
        except SlurmError:
            pass  # gone already, or slurmctld away: the next watch round tries again

    async def kill(self, handle: LaunchHandle) -> None:
        """``scancel`` the job (Slurm SIGKILLs what is left after KillWait)."""
        with contextlib.suppress(SlurmError):  # the job has ended already
            await self.commands.cancel([str(handle.pid)])

    async def group_alive(self, handle: LaunchHandle) -> bool:
        """Whether the broker's job is still pending or running."""
        self._snapshot_at = -math.inf  # asked while stopping: a fresh answer
        return await self.exit_code(handle) is None

    async def describe_exit(self, handle: LaunchHandle) -> str:
        """Slurm's state, the exit status and the last lines of the broker's log."""
        try:
            info = await self._job(handle)
        except SlurmError as e:
            return clean_reason(f"Slurm job {handle.pid}: state unknown ({e})")
        code = await self.exit_code(handle)
        status = "still running" if code is None else describe_code(code)
        state = info.state if info is not None else "gone"
        tail = log_tail(handle.log_path)
        text = f"Slurm job {handle.pid} {state}, {status}"
        return clean_reason(f"{text}; last log lines: {tail}" if tail else text)

    async def fill(self) -> None:
        """Nothing is kept ready on Slurm (no warm brokers there yet)."""

    async def close(self) -> None:
        """Nothing to release (the brokers keep running as Slurm jobs)."""
