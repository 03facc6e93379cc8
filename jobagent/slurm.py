"""The factory's Slurm backend: job agents as Slurm batch jobs (``sbatch``/``squeue``/``scancel``).

Each submission is one ``sbatch``: a single agent, or a job array when the factory asks for
several at once (one script whose ``case $SLURM_ARRAY_TASK_ID`` picks the agent). The job
script ``exec``\\ s the agent, so the agent *is* the batch shell: ``--signal=B:TERM@<grace>``
and ``scancel --batch --signal=TERM`` reach it alone and it drains (retires its worker,
releases its batch job) before the wall-time limit. The agent's token travels in ``sbatch``'s
environment (``--export=ALL``), never in argv or the script.

Every job carries a name made from its first agent's id. When ``sbatch`` fails, the job may
still have gone in (a time-out while slurmctld restarts): before that submission is tried
again the backend looks for a job of that name and adopts it, so nothing is submitted twice.
While slurmctld does not answer, every agent counts as still running: nothing is replaced.
"""

from __future__ import annotations

import asyncio
import math
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from podgrid.jobagent.factory import AgentSpec
from podgrid.slurmctl import (
    EXIT_LOST,
    FAILED_STATES,
    JobInfo,
    SlurmCommands,
    SlurmError,
    SubmitRefused,
    batch_script,
    time_limit,
)

log = structlog.get_logger("podgrid.site")

HANDLE_PREFIX: Final = "slurm:"
JOB_NAME_PREFIX: Final = "podgrid-"
DEFAULT_REFRESH_S: Final = 1.0  # seconds a squeue snapshot is reused by poll/is_queued
DEFAULT_SIGNAL_GRACE_S: Final = 60  # --signal=B:TERM@N; Slurm delivers it up to 60 s late
KILL_WAIT_S: Final = 60.0  # seconds we wait for a job to leave after a plain scancel
STOP_POLL_S: Final = 0.5


@dataclass(frozen=True)
class SlurmJobOptions:
    """What every agent job asks Slurm for (from the CE's configuration and the flags)."""

    output_dir: Path  # Slurm's own output of each job (slurm-<id>.out)
    partition: str | None = None
    account: str | None = None
    directives: tuple[str, ...] = ()  # extra "#SBATCH ..." lines, as the site wrote them
    env_script: str | None = None  # sourced by the job script before the agent starts
    wall_time_s: float | None = None  # --time: the agent's slot TTL
    cpus: int | None = None  # --cpus-per-task
    memory_mb: int | None = None  # --mem
    signal_grace_s: int = DEFAULT_SIGNAL_GRACE_S

    def sbatch_args(self) -> list[str]:
        """The ``sbatch`` flags common to every submission."""
        args = ["--no-requeue", f"--signal=B:TERM@{self.signal_grace_s}"]
        args += [f"--chdir={self.output_dir}"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.account:
            args.append(f"--account={self.account}")
        if self.wall_time_s is not None:
            args.append(f"--time={time_limit(self.wall_time_s)}")
        if self.cpus is not None:
            args.append(f"--cpus-per-task={self.cpus}")
        if self.memory_mb is not None:
            args.append(f"--mem={self.memory_mb}")
        return args


def job_name(specs: Sequence[AgentSpec]) -> str:
    """``podgrid-<first agent id>`` (``+N`` for the N further agents of an array)."""
    more = f"+{len(specs) - 1}" if len(specs) > 1 else ""
    return f"{JOB_NAME_PREFIX}{specs[0].agent_id}{more}"


def _start_lines(spec: AgentSpec, env_script: str | None) -> list[str]:
    log_file = shlex.quote(str(spec.state_dir / "agent.log"))
    lines = [f"mkdir -p {shlex.quote(str(spec.state_dir))} || exit 1"]
    lines.append(f"exec >>{log_file} 2>&1")
    if env_script:
        lines.append(f". {shlex.quote(env_script)} || exit 1")
    lines.append(f"exec {shlex.join(spec.argv)}")
    return lines


def agent_script(specs: Sequence[AgentSpec], options: SlurmJobOptions) -> str:
    """The job script for one agent or, for several, a job array of them."""
    directives = list(options.directives)
    if len(specs) == 1:
        return batch_script(directives, _start_lines(specs[0], options.env_script))
    body = ['case "$SLURM_ARRAY_TASK_ID" in']
    for index, spec in enumerate(specs):
        body.append(f"{index})")
        body += [f"    {line}" for line in _start_lines(spec, options.env_script)]
        body.append("    ;;")
    body += ["esac", 'echo "podgrid: no agent for array task $SLURM_ARRAY_TASK_ID" >&2', "exit 1"]
    return batch_script(directives, body)


@dataclass
class _Tracked:
    key: str
    name: str
    submitted_at: float = field(default_factory=time.monotonic)


class SlurmBackend:
    """Agents as Slurm jobs; one ``squeue`` per :attr:`refresh_s` serves every poll."""

    def __init__(
        self,
        options: SlurmJobOptions,
        commands: SlurmCommands | None = None,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
    ) -> None:
        self.options = options
        self.commands = commands or SlurmCommands()
        self.refresh_s = refresh_s
        self._tracked: dict[str, _Tracked] = {}  # handle -> its job
        self._tried: set[str] = set()  # names whose sbatch failed: look before trying again
        self._snapshot: dict[str, JobInfo] = {}
        self._snapshot_at = -math.inf  # monotonic time the snapshot was asked for
        self._lock = asyncio.Lock()

    # -- submit -------------------------------------------------------------------------------

    async def submit(self, spec: AgentSpec) -> str:
        """One agent as one job; SubmitRefused when sbatch says no."""
        return (await self.submit_many([spec]))[0]

    async def submit_many(self, specs: Sequence[AgentSpec]) -> list[str]:
        """Several agents in one ``sbatch --array`` (they share the first spec's environment).

        SubmitRefused when sbatch says no: none of them was queued (or one was and is found
        by its name on the next try).
        """
        if not specs:
            return []
        if any(s.env != specs[0].env for s in specs[1:]):
            return [h for s in specs for h in await self.submit_many([s])]
        name = job_name(specs)
        for spec in specs:
            spec.state_dir.mkdir(parents=True, exist_ok=True)
        self.options.output_dir.mkdir(parents=True, exist_ok=True)
        job_id = await self._adopt(name) if name in self._tried else None
        if job_id is None:
            args = [*self.options.sbatch_args(), f"--job-name={name}"]
            out = "slurm-%A_%a.out" if len(specs) > 1 else "slurm-%j.out"
            args.append(f"--output={self.options.output_dir / out}")
            if len(specs) > 1:
                args.append(f"--array=0-{len(specs) - 1}")
            self._tried.add(name)
            job_id = await self.commands.submit(
                agent_script(specs, self.options), args, specs[0].env
            )
        self._tried.discard(name)
        keys = [job_id] if len(specs) == 1 else [f"{job_id}_{i}" for i in range(len(specs))]
        handles = []
        for key in keys:
            handle = HANDLE_PREFIX + key
            self._tracked[handle] = _Tracked(key, name)
            handles.append(handle)
        log.info("site.slurm_submitted", job_id=job_id, name=name, agents=len(specs))
        return handles

    async def _adopt(self, name: str) -> str | None:
        """The id of the job an earlier, failed-looking sbatch of ``name`` queued after all."""
        try:
            jobs = await self.commands.jobs(names=[name])
        except SlurmError as e:
            raise SubmitRefused(f"cannot tell whether {name} was queued: {e}") from e
        for info in jobs.values():
            job_id = info.key.split("_", 1)[0]
            log.warning("site.slurm_adopted", name=name, job_id=job_id)
            return job_id
        return None

    # -- track --------------------------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> bool:
        """Renew the squeue snapshot if it is older than :attr:`refresh_s`; False if it failed."""
        async with self._lock:
            asked = time.monotonic()
            if not force and asked - self._snapshot_at < self.refresh_s:
                return True
            try:
                names = {t.name for t in self._tracked.values()}
                self._snapshot = await self.commands.jobs(names=names)
            except SlurmError as e:
                log.warning("site.slurm_unreachable", error=str(e))
                return False
            self._snapshot_at = asked
            return True

    def _info(self, handle: str) -> JobInfo | None:
        """The snapshot's view of the job; None when it is older than the submission."""
        tracked = self._tracked.get(handle)
        if tracked is None or self._snapshot_at < tracked.submitted_at:
            return None
        return self._snapshot.get(tracked.key)

    async def poll(self, handle: str) -> int | None:
        """The agent's exit code once its job has ended; None while it waits or runs.

        None too while slurmctld does not answer: an agent is never taken for gone (and
        replaced) on a missing answer.
        """
        tracked = self._tracked.get(handle)
        if tracked is None:
            return EXIT_LOST
        if not await self.refresh() or self._snapshot_at < tracked.submitted_at:
            return None
        info = self._snapshot.get(tracked.key)
        if info is None:
            info = await self.commands.accounted(tracked.key)
        if info is not None and info.live:
            return None
        self._forget(handle)
        state = info.state if info is not None else "LOST"
        code = info.exit_code if info is not None else EXIT_LOST
        if code == 0 and state in FAILED_STATES:
            code = EXIT_LOST  # ended badly with nothing to show for it
        log.info("site.slurm_ended", handle=handle, state=state, exit_code=code)
        return code

    def is_queued(self, handle: str) -> bool:
        """Whether the job still waits in the queue (as of the last snapshot)."""
        tracked = self._tracked.get(handle)
        if tracked is None:
            return False
        info = self._info(handle)
        return info is None or info.queued

    def node_of(self, handle: str) -> str:
        """The node the agent's job runs on ('' while it waits)."""
        info = self._info(handle)
        return info.node if info is not None else ""

    def _forget(self, handle: str) -> None:
        self._tracked.pop(handle, None)

    # -- cancel -------------------------------------------------------------------------------

    async def cancel(self, handle: str, grace_s: float) -> None:
        """SIGTERM the agent (the batch shell) and wait ``grace_s``; then ``scancel`` the job."""
        tracked = self._tracked.get(handle)
        if tracked is None:
            return
        try:
            await self.refresh()
            info = self._info(handle)
            if info is not None and not info.live:
                return
            if info is not None and info.state == "RUNNING":
                await self.commands.cancel([tracked.key], signal="TERM")
                if await self._wait_gone(handle, grace_s):
                    return
            await self.commands.cancel([tracked.key])
            await self._wait_gone(handle, KILL_WAIT_S)
        except SlurmError as e:
            log.warning("site.slurm_cancel_failed", handle=handle, error=str(e))

    async def _wait_gone(self, handle: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.refresh()
            info = self._info(handle)
            if info is not None and not info.live:
                return True
            if time.monotonic() >= deadline:
                return False


__all__ = ["SlurmBackend", "SlurmJobOptions", "SubmitRefused", "agent_script", "job_name"]
