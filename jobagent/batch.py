"""The batch fallback: run one claimed master-queue job in a sandbox, heart-beat it, report it.

The job's argv runs without a shell in a fresh sandbox directory, in its own process group,
with its own environment (plus a few ``PODGRID_*`` variables and a ``PATH``). Its stdout and
stderr go to ``stdout.txt``/``stderr.txt`` in the sandbox, cut at a size cap (the job keeps
running; what is cut is counted and noted at the end of the file). The wall-time limit is the
job's TTL or what is left of the slot, whichever is shorter. The lease is renewed while it
runs; a lost lease (killed, expired) kills the job without a report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import structlog

from podgrid.config import environment
from podgrid.errors import CallFailed, Conflict
from podgrid.jobagent.processes import exit_status, stop_group
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import Claim, JobState

log = structlog.get_logger("podgrid.jobagent")

READ_CHUNK_BYTES: Final = 64 * 1024
DEFAULT_OUTPUT_CAP_BYTES: Final = 10 * 1024 * 1024
MIN_HEARTBEAT_S: Final = 0.2  # seconds, floor of the lease renewal period
TIMEOUT_EXIT: Final = 124  # like coreutils' `timeout`
Outcome = Literal["exited", "timeout", "stopped", "lease_lost"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How a batch job ended and what the master queue was told."""

    job_id: int
    outcome: Outcome
    exit_code: int
    reported_state: str | None
    sandbox: Path
    truncated_bytes: int


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Limits for one job; ``slot_left_s`` already has the agent's exit margin taken off."""

    slot_left_s: float
    grace_s: float
    output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES


async def _copy_capped(stream: asyncio.StreamReader, path: Path, cap: int) -> int:
    """Copy ``stream`` to ``path`` up to ``cap`` bytes, drain the rest; bytes dropped."""
    written = dropped = 0
    with path.open("wb") as out:
        while chunk := await stream.read(READ_CHUNK_BYTES):
            room = max(cap - written, 0)
            if room:
                out.write(chunk[:room])
                out.flush()  # people (and tests) tail a running job's output
            written += min(room, len(chunk))
            dropped += max(len(chunk) - room, 0)
        if dropped:
            out.write(f"\n[podgrid: output cut at {cap} bytes; {dropped} bytes dropped]\n".encode())
    return dropped


def job_environment(claim: Claim, sandbox: Path, agent_id: str) -> dict[str, str]:
    """The job's own environment plus where it runs; nothing else of the agent's leaks in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(sandbox),
        "TMPDIR": str(sandbox),
        environment.JOB_ID: str(claim.job.id),
        environment.AGENT_ID: agent_id,
        environment.SANDBOX: str(sandbox),
    }
    env.update(claim.job.spec.env)
    return env


class BatchRunner:
    """Runs claimed jobs under ``sandbox_root`` and reports them to the master queue."""

    def __init__(self, client: MasterQueueClient, sandbox_root: Path, agent_id: str) -> None:
        self.client = client
        self.sandbox_root = sandbox_root
        self.agent_id = agent_id

    async def run(self, claim: Claim, limits: BatchLimits, stopping: asyncio.Event) -> BatchResult:
        """Run the job to its end (exit, wall time, agent stop or lost lease) and report it."""
        job = claim.job
        sandbox = self.sandbox_root / f"job-{job.id}-{job.attempts}"
        sandbox.mkdir(parents=True, exist_ok=True)
        wall_s = max(0.0, min(float(job.spec.ttl_s), limits.slot_left_s))
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *job.spec.command,
                cwd=sandbox,
                env=job_environment(claim, sandbox, self.agent_id),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            (sandbox / "stderr.txt").write_text(
                f"podgrid: cannot start {job.spec.command[0]!r}: {e}\n"
            )
            log.warning("jobagent.batch_start_failed", job_id=job.id, error=str(e))
            return await self._report(claim, "exited", 127, sandbox, 0)
        log.info(
            "jobagent.batch_started",
            job_id=job.id,
            pid=process.pid,
            wall_s=round(wall_s, 1),
            sandbox=str(sandbox),
        )
        assert process.stdout is not None
        assert process.stderr is not None
        cap = limits.output_cap_bytes
        copies = asyncio.gather(
            _copy_capped(process.stdout, sandbox / "stdout.txt", cap),
            _copy_capped(process.stderr, sandbox / "stderr.txt", cap),
        )
        beat = asyncio.create_task(self._heartbeats(claim))
        outcome = await self._supervise(process, wall_s, beat, stopping)
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        # Always: children of a job that exited may still hold its pipes open.
        await stop_group(process, limits.grace_s)
        dropped = sum(await copies)
        code = TIMEOUT_EXIT if outcome == "timeout" else exit_status(process.returncode or 0)
        log.info(
            "jobagent.batch_ended",
            job_id=job.id,
            outcome=outcome,
            exit_code=code,
            took_s=round(time.monotonic() - started, 3),
            dropped_bytes=dropped,
        )
        return await self._report(claim, outcome, code, sandbox, dropped)

    async def _supervise(
        self,
        process: asyncio.subprocess.Process,
        wall_s: float,
        beat: asyncio.Task[None],
        stopping: asyncio.Event,
    ) -> Outcome:
        ended = asyncio.create_task(process.wait())
        stop = asyncio.create_task(stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {ended, stop, beat}, timeout=wall_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
        if ended in done:
            return "exited"
        if beat in done:
            return "lease_lost"
        return "stopped" if stop in done else "timeout"

    async def _heartbeats(self, claim: Claim) -> None:
        """Renew the lease every third of it; return (ends supervision) once it is lost."""
        period = max(claim.lease_s / 3.0, MIN_HEARTBEAT_S)
        state = JobState.STARTED
        while True:
            try:
                await self.client.heartbeat_job(claim.job.id, claim.lease_token, state)
                state = JobState.RUNNING
            except Conflict as e:
                log.warning("jobagent.lease_lost", job_id=claim.job.id, error=str(e))
                return
            except CallFailed as e:
                # The lease may still hold; keep trying until the master queue says otherwise.
                log.warning("jobagent.heartbeat_failed", job_id=claim.job.id, error=str(e))
            await asyncio.sleep(period)

    async def _report(
        self, claim: Claim, outcome: Outcome, code: int, sandbox: Path, dropped: int
    ) -> BatchResult:
        reported: str | None = None
        if outcome != "lease_lost":
            try:
                record = await self.client.finish_job(claim.job.id, claim.lease_token, code)
                reported = str(record.state)
            except CallFailed as e:
                log.warning("jobagent.finish_failed", job_id=claim.job.id, error=str(e))
        log.info("jobagent.batch_reported", job_id=claim.job.id, state=reported, exit_code=code)
        return BatchResult(claim.job.id, outcome, code, reported, sandbox, dropped)
