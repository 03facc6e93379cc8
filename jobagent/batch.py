"""The batch fallback: run one claimed master-queue job in a sandbox, heart-beat it, report it.

The job's argv runs without a shell in a fresh sandbox directory, in its own process group,
with its own environment (plus a few ``PODGRID_*`` variables and a ``PATH``; nothing of the
agent's), under the agent's ``payload_user`` when one is configured. Its stdout and stderr go
to ``stdout.txt``/``stderr.txt`` in the sandbox (opened by the agent before the job starts, so
a job cannot point them elsewhere), cut at a size cap (the job keeps running; what is cut is
counted and noted at the end of the file). The wall-time limit is the job's TTL or what is
left of the slot, whichever is shorter. The lease is renewed while it runs; a lost lease
(killed, expired) kills the job without a report.

No job outlives its agent: the job runs under :mod:`podgrid.jobagent.supervise`, which the
kernel tells when the agent dies and which then kills the job's whole group; and the group is
recorded in ``<sandbox root>/running.json``, so a replacement agent on the same state dir
kills whatever is left of it (:meth:`BatchRunner.reap_leftover`).

A job that cannot be started, for whatever reason, is reported finished with exit code 127
and the reason in its ``stderr.txt``; the agent goes on. A job stopped because the agent shuts
down is not the job's failure: it is released back to the queue (WAITING, the attempt not
counted) with the reason in its history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

import structlog

from podgrid.config import environment
from podgrid.config.processes import signal_group
from podgrid.config.runtime import wait_event
from podgrid.errors import CallFailed, Conflict
from podgrid.jobagent import supervise
from podgrid.jobagent.payload import DEFAULT_PATH, Payload
from podgrid.jobagent.processes import exit_status, spawn_supervised, stop_group
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import Claim, JobState

log = structlog.get_logger("podgrid.jobagent")

READ_CHUNK_BYTES: Final = 64 * 1024
DEFAULT_OUTPUT_CAP_BYTES: Final = 10 * 1024 * 1024
MIN_HEARTBEAT_S: Final = 0.2  # seconds, floor of the lease renewal period
TIMEOUT_EXIT: Final = 124  # like coreutils' `timeout`
CANNOT_START_EXIT: Final = supervise.CANNOT_START
TERM_EXIT: Final = 128 + signal.SIGTERM  # a payload that died of SIGTERM
SIGTERM_RACE_S: Final = 1.0  # seconds to see whether the agent got the same SIGTERM
RUNNING_FILE: Final = "running.json"  # the running job's group, for a replacement agent
RELEASE_REASON: Final = "agent shut down: job returned to the queue"
REAP_WAIT_S: Final = 5.0  # seconds a leftover group gets to vanish after SIGKILL
# Started by path with -I -S: stdlib only, and no PYTHON* variable changes what it runs.
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
Outcome = Literal["exited", "timeout", "stopped", "lease_lost", "start_failed"]


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


async def _copy_capped(stream: asyncio.StreamReader, out: IO[bytes], cap: int) -> int:
    """Copy ``stream`` to ``out`` up to ``cap`` bytes, drain the rest, close; bytes dropped."""
    written = dropped = 0
    with out:
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
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "HOME": str(sandbox),
        "TMPDIR": str(sandbox),
        environment.JOB_ID: str(claim.job.id),
        environment.AGENT_ID: agent_id,
        environment.SANDBOX: str(sandbox),
    }
    env.update(claim.job.spec.env)
    return env


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


def _group_members(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` (one scan of /proc, done once at start-up)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    members.append(int(entry.name))
    return members


def _runs_job(pid: int, job_id: int, agent_id: str) -> bool:
    """Whether ``pid``'s environment names this agent's job (the supervisor's and the job's do)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        f"{environment.JOB_ID}={job_id}".encode() in env
        and f"{environment.AGENT_ID}={agent_id}".encode() in env
    )


class BatchRunner:
    """Runs claimed jobs under ``sandbox_root`` and reports them to the master queue."""

    def __init__(
        self,
        client: MasterQueueClient,
        sandbox_root: Path,
        agent_id: str,
        payload: Payload | None = None,
    ) -> None:
        self.client = client
        self.sandbox_root = sandbox_root
        self.agent_id = agent_id
        self.payload = payload or Payload()

    @property
    def running_file(self) -> Path:
        """Where the running job's process group is recorded."""
        return self.sandbox_root / RUNNING_FILE

    def reap_leftover(self) -> int | None:
        """Kill the job group an earlier agent on this state dir left running; its pgid.

        Only a group that is provably that job's is killed: its leader is still the process
        recorded (same start time), or, the leader gone, a member's environment names the
        recorded job and agent. A pid reused by anything else is left alone.
        """
        try:
            doc = json.loads(self.running_file.read_text())
            pgid, job_id, ticks = int(doc["pgid"]), int(doc["job_id"]), doc.get("start_ticks")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("jobagent.leftover_unreadable", path=str(self.running_file), error=str(e))
            self.running_file.unlink(missing_ok=True)
            return None
        leader_ticks = _start_ticks(pgid)
        if leader_ticks is not None:
            ours = leader_ticks == ticks
        else:
            ours = any(_runs_job(pid, job_id, self.agent_id) for pid in _group_members(pgid))
        killed = ours and signal_group(pgid, signal.SIGKILL)
        self.running_file.unlink(missing_ok=True)
        if killed:
            log.warning("jobagent.leftover_killed", pgid=pgid, job_id=job_id)
            return pgid
        return None

    async def run(self, claim: Claim, limits: BatchLimits, stopping: asyncio.Event) -> BatchResult:
        """Run the job to its end (exit, wall time, agent stop or lost lease) and report it.

        Never raises for the job's sake: a job that cannot be started is reported with 127.
        """
        job = claim.job
        sandbox = self.sandbox_root / f"job-{job.id}-{job.attempts}"
        wall_s = max(0.0, min(float(job.spec.ttl_s), limits.slot_left_s))
        started = time.monotonic()
        out: IO[bytes] | None = None
        err: IO[bytes] | None = None
        try:
            sandbox = self._new_sandbox(sandbox)
            out = os.fdopen(os.open(sandbox / "stdout.txt", _NEW_FILE, 0o644), "wb")
            err = os.fdopen(os.open(sandbox / "stderr.txt", _NEW_FILE, 0o644), "wb")
            process = await self._spawn(claim, sandbox)
        except Exception as e:  # any failure to start is the job's 127, never the agent's end
            if out is not None:
                out.close()
            return await self._start_failed(claim, sandbox, err, e)
        assert out is not None
        assert err is not None
        self._record_running(process.pid, job.id)
        log.info(
            "jobagent.batch_started",
            job_id=job.id,
            pid=process.pid,
            wall_s=round(wall_s, 1),
            sandbox=str(sandbox),
            payload_uid=self.payload.uid,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        cap = limits.output_cap_bytes
        copies = asyncio.gather(
            _copy_capped(process.stdout, out, cap),
            _copy_capped(process.stderr, err, cap),
        )
        beat = asyncio.create_task(self._heartbeats(claim))
        outcome = await self._supervise(process, wall_s, beat, stopping)
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        # Always: children of a job that exited may still hold its pipes open.
        await stop_group(process, limits.grace_s)
        self.running_file.unlink(missing_ok=True)
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

    def _new_sandbox(self, wanted: Path) -> Path:
        """A directory that did not exist before (``wanted``, or ``wanted.N``), the payload's.

        Never an old one: whatever a former run left in it (a symlink named ``stdout.txt``)
        must not decide where the agent writes.
        """
        self.sandbox_root.mkdir(parents=True, exist_ok=True)
        if self.payload.isolated:
            # The payload may pass through to its own sandbox, not list or touch the others.
            os.chmod(self.sandbox_root, 0o711)  # noqa: S103
        for n in range(100):
            path = wanted if n == 0 else wanted.with_name(f"{wanted.name}.{n}")
            try:
                path.mkdir(mode=0o700 if self.payload.isolated else 0o755)
            except FileExistsError:
                continue
            self.payload.chown(path)
            return path
        raise FileExistsError(f"no free sandbox name next to {wanted}")

    async def _spawn(self, claim: Claim, sandbox: Path) -> asyncio.subprocess.Process:
        """Start the supervisor (a new session) and hand it the job on its stdin."""
        job = claim.job
        own_env = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            environment.JOB_ID: str(job.id),
            environment.AGENT_ID: self.agent_id,
        }
        return await spawn_supervised(
            list(job.spec.command),
            env=job_environment(claim, sandbox, self.agent_id),
            cwd=sandbox,
            user=self.payload.uid,
            group=self.payload.gid,
            own_env=own_env,
        )

    def _record_running(self, pgid: int, job_id: int) -> None:
        """Write ``running.json`` (pgid, job, the leader's start time), 0600, atomically."""
        doc = {"pgid": pgid, "job_id": job_id, "start_ticks": _start_ticks(pgid)}
        tmp = self.running_file.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self.running_file)
        except OSError as e:  # the supervisor still ties the job to us; only the fallback is lost
            log.warning("jobagent.running_file_failed", error=str(e))

    async def _start_failed(
        self, claim: Claim, sandbox: Path, err: IO[bytes] | None, e: Exception
    ) -> BatchResult:
        """Report a job that could not be started (127), with the reason in its stderr.txt."""
        command = claim.job.spec.command
        first = command[0] if isinstance(command, list) and command else command
        reason = f"podgrid: cannot start {first!r}: {type(e).__name__}: {e}\n"
        with contextlib.suppress(OSError):
            if err is not None:
                with err:
                    err.write(reason.encode(errors="replace"))
            else:  # no sandbox of ours, or no file in it: O_EXCL|O_NOFOLLOW, never a stray one
                fd = os.open(sandbox / "stderr.txt", _NEW_FILE, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(reason.encode(errors="replace"))
        log.warning(
            "jobagent.batch_start_failed",
            job_id=claim.job.id,
            error=f"{type(e).__name__}: {e}",
        )
        return await self._report(claim, "start_failed", CANNOT_START_EXIT, sandbox, 0)

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
            if exit_status(ended.result()) == TERM_EXIT and not stopping.is_set():
                # A batch system signals the whole job (agent and payload) at once: a payload
                # killed by SIGTERM just before the agent's own SIGTERM is the agent stopping.
                await wait_event(stopping, SIGTERM_RACE_S)
            if stopping.is_set() and exit_status(ended.result()) == TERM_EXIT:
                return "stopped"
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
        """Finish the job, or release it when the agent stopped it (not the job's failure)."""
        reported: str | None = None
        if outcome == "stopped":
            try:
                record = await self.client.release_job(
                    claim.job.id, claim.lease_token, RELEASE_REASON
                )
                reported = str(record.state)
            except CallFailed as e:  # the lease then runs out and the sweep requeues it
                log.warning("jobagent.release_failed", job_id=claim.job.id, error=str(e))
        elif outcome != "lease_lost":
            try:
                record = await self.client.finish_job(claim.job.id, claim.lease_token, code)
                reported = str(record.state)
            except CallFailed as e:
                log.warning("jobagent.finish_failed", job_id=claim.job.id, error=str(e))
        log.info("jobagent.batch_reported", job_id=claim.job.id, state=reported, exit_code=code)
        return BatchResult(claim.job.id, outcome, code, reported, sandbox, dropped)
