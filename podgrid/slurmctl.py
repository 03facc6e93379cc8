"""Slurm's client commands (``sbatch``, ``squeue``, ``scancel``) run and read in one place.

The site factory's Slurm backend, the agent's slot description and the master queue's Slurm
launcher all talk to Slurm through :class:`SlurmCommands`: no ``pyslurm``, no sudo, only the
commands a site's users have. Secrets never go on a command line: ``sbatch`` gets the job's
environment as its own and ``--export=ALL``; the job script comes on its stdin.

``squeue -t all`` is the one source of job states: finished jobs stay visible for the
controller's ``MinJobAge`` (300 s by default), and the factory looks every second or so. A
job it no longer lists is asked of ``sacct`` (accounting, when the site has it).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from podgrid.errors import PodGridError

COMMAND_TIMEOUT_S: Final = 30.0  # seconds one Slurm command may take (slurmctld busy or away)
LIVE_STATES: Final = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
)
QUEUED_STATES: Final = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
FAILED_STATES: Final = frozenset(
    {"FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
EXIT_LOST: Final = 255  # the job is gone and nothing says how it ended
# The factory's own Slurm context must not leak into what it submits (it may itself run as
# a Slurm job): input variables of sbatch and the job's SLURM_* are dropped, SLURM_CONF kept.
_DROPPED_PREFIXES: Final = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")
_KEPT: Final = frozenset({"SLURM_CONF"})
_SQUEUE_FIELDS: Final = ("JobID", "ArrayJobID", "ArrayTaskID", "State", "exit_code", "NodeList")
_SQUEUE_FORMAT: Final = ",".join(f"{f}:|" for f in _SQUEUE_FIELDS) + ",Name:"


class SlurmError(PodGridError, OSError):
    """A Slurm command failed or could not be run; the message holds its error output."""


class SubmitRefused(SlurmError):
    """``sbatch`` did not take the job (partition drained or inactive, limits, no controller)."""


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One job (or array element) as ``squeue`` lists it."""

    key: str  # "123" or "120_4" for an array element: stable from submission to the end
    job_id: str
    state: str
    wait_status: int | None  # the raw wait status (exit code << 8 | signal), None if unknown
    node: str
    name: str

    @property
    def live(self) -> bool:
        """Pending or running (or on its way there)."""
        return self.state in LIVE_STATES

    @property
    def queued(self) -> bool:
        """Waiting in the queue for resources."""
        return self.state in QUEUED_STATES

    @property
    def exit_code(self) -> int:
        """The job's exit code in shell convention (128 + N for signal N)."""
        return shell_code(self.wait_status)


def shell_code(wait_status: int | None) -> int:
    """A raw wait status as a shell reports it; :data:`EXIT_LOST` when unknown."""
    if wait_status is None:
        return EXIT_LOST
    if wait_status & 0x7F:
        return 128 + (wait_status & 0x7F)
    return (wait_status >> 8) & 0xFF


def submit_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the SLURM_*/SBATCH_* variables of a job the submitter may run in."""
    return {k: v for k, v in env.items() if k in _KEPT or not k.startswith(_DROPPED_PREFIXES)}


def batch_script(directives: Sequence[str], body: Sequence[str]) -> str:
    """A ``#!/bin/sh`` job script: ``#SBATCH`` lines first (Slurm stops reading at a command)."""
    lines = ["#!/bin/sh"]
    lines += [d if d.startswith("#SBATCH") else f"#SBATCH {d}" for d in directives]
    return "\n".join([*lines, *body]) + "\n"


def time_limit(seconds: float) -> str:
    """``--time`` in whole minutes, rounded up (Slurm's granularity), at least one."""
    return str(max(1, -(-int(seconds) // 60)))


@dataclass(frozen=True)
class SlurmCommands:
    """Where Slurm's commands are and what environment they run with (``SLURM_CONF``)."""

    sbatch: str = "sbatch"
    squeue: str = "squeue"
    scancel: str = "scancel"
    sacct: str = "sacct"
    env: Mapping[str, str] = field(default_factory=dict)  # added to each command's environment
    user: str = field(default_factory=getpass.getuser)
    timeout_s: float = COMMAND_TIMEOUT_S

    async def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str = ""
    ) -> str:
        """Run one command; its stdout. SlurmError (with its stderr) when it fails."""
        full_env = {**(os.environ if env is None else env), **self.env}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=full_env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            raise SlurmError(f"{argv[0]} cannot be run: {e}") from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), self.timeout_s)
        except TimeoutError as e:
            proc.kill()
            await proc.wait()
            raise SlurmError(f"{argv[0]} did not answer within {self.timeout_s:g} s") from e
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
            raise SlurmError(f"{shlex.join(argv[:1])} failed ({proc.returncode}): {text}")
        return out.decode(errors="replace")

    async def submit(self, script: str, args: Sequence[str], env: Mapping[str, str]) -> str:
        """``sbatch --parsable`` the script (on stdin) with ``env`` as the job's environment.

        The job id; SubmitRefused when sbatch says no (nothing was queued, or, on a time-out,
        nothing is known: the caller looks for the job by name before it tries again).
        """
        argv = [self.sbatch, "--parsable", "--export=ALL", *args]
        try:
            out = await self.run(argv, env=submit_environment(env), stdin=script)
        except SlurmError as e:
            raise SubmitRefused(str(e)) from e
        job_id = out.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise SubmitRefused(f"sbatch answered {out.strip()!r}, not a job id")
        return job_id

    async def jobs(self, names: Iterable[str] | None = None) -> dict[str, JobInfo]:
        """This user's jobs in any state (one row per array element), by :attr:`JobInfo.key`.

        ``names`` restricts the listing to jobs of those names. SlurmError when the
        controller does not answer.
        """
        argv = [self.squeue, "-h", "-t", "all", "-r", "-u", self.user, "-O", _SQUEUE_FORMAT]
        wanted = sorted(set(names or ()))
        if names is not None:
            if not wanted:
                return {}
            argv += ["--name", ",".join(wanted)]
        found: dict[str, JobInfo] = {}
        for line in (await self.run(argv)).splitlines():
            info = _parse_row(line)
            if info is not None:
                found[info.key] = info
        return found

    async def accounted(self, key: str) -> JobInfo | None:
        """A finished job from ``sacct`` (None without accounting, or when it knows nothing)."""
        argv = [self.sacct, "-n", "-X", "-P", "-j", key, "-o", "JobID,State,ExitCode,NodeList"]
        try:
            out = await self.run(argv)
        except SlurmError:
            return None
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 4 and parts[0] == key:
                code, _, sig = parts[2].partition(":")
                status = (int(code) << 8 | int(sig)) if code.isdigit() and sig.isdigit() else None
                state = parts[1].split()[0] if parts[1] else "UNKNOWN"
                return JobInfo(key, key.split("_")[0], state, status, parts[3], "")
        return None

    async def cancel(self, keys: Sequence[str], *, signal: str | None = None) -> None:
        """``scancel`` the jobs; with ``signal``, only that signal to each batch shell."""
        if not keys:
            return
        flags = ["--batch", f"--signal={signal}"] if signal else []
        await self.run([self.scancel, *flags, *keys])


def _parse_row(line: str) -> JobInfo | None:
    parts = line.split("|", len(_SQUEUE_FIELDS))
    if len(parts) != len(_SQUEUE_FIELDS) + 1:
        return None
    job_id, array_id, task_id, state, status, node, name = (p.strip() for p in parts)
    if not job_id:
        return None
    key = f"{array_id}_{task_id}" if task_id.isdigit() else job_id
    wait_status = int(status) if status.isdigit() else None
    return JobInfo(key, job_id, state.split()[0] if state else "UNKNOWN", wait_status, node, name)
