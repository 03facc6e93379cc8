"""The batch fallback runner against a real master queue: sandbox, caps, limits, reports."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from podgrid.jobagent.batch import BatchLimits, BatchRunner
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import Claim, SlotDescription
from tests.jobagent.grid import Grid, running_grid

SLOT = SlotDescription(agent_id="runner-1", site="S", cores=2, memory_mb=4096, ttl_s=3600)


@pytest.fixture
async def grid(tmp_path: Path) -> AsyncIterator[Grid]:
    async with running_grid(tmp_path) as g:
        yield g


@pytest.fixture
async def agent_client(grid: Grid) -> AsyncIterator[MasterQueueClient]:
    async with MasterQueueClient(grid.mq_url, grid.agent_token) as client:
        yield client


async def claim(grid: Grid, client: MasterQueueClient, *command: str, **spec: object) -> Claim:
    await grid.submit_job(*command, **spec)  # type: ignore[arg-type]
    got = await client.match(SLOT)
    assert got is not None
    return got


async def test_job_runs_in_sandbox_with_its_env_and_is_reported_done(
    grid: Grid, agent_client: MasterQueueClient, tmp_path: Path
) -> None:
    script = (
        "import os; print(os.getcwd()); print(os.environ['GREETING']); print('HOME' in os.environ)"
    )
    c = await claim(grid, agent_client, sys.executable, "-c", script, env={"GREETING": "hi"})
    runner = BatchRunner(agent_client, tmp_path / "sb", "runner-1")
    result = await runner.run(c, BatchLimits(slot_left_s=60, grace_s=1), asyncio.Event())
    assert result.reported_state == "DONE"
    lines = (result.sandbox / "stdout.txt").read_text().splitlines()
    assert lines == [str(result.sandbox), "hi", "True"]
    assert await grid.job_state(c.job.id) == "DONE"


async def test_output_beyond_the_cap_is_cut_and_the_job_still_finishes(
    grid: Grid, agent_client: MasterQueueClient, tmp_path: Path
) -> None:
    script = "import sys; sys.stdout.write('x' * 200000); sys.stderr.write('e' * 10)"
    c = await claim(grid, agent_client, sys.executable, "-c", script)
    runner = BatchRunner(agent_client, tmp_path / "sb", "runner-1")
    limits = BatchLimits(slot_left_s=60, grace_s=1, output_cap_bytes=1000)
    result = await runner.run(c, limits, asyncio.Event())
    out = (result.sandbox / "stdout.txt").read_text()
    assert out.startswith("x" * 1000)
    assert "199000 bytes dropped" in out
    assert len(out) < 1200
    assert (result.sandbox / "stderr.txt").read_text() == "e" * 10
    assert result.reported_state == "DONE"


async def test_wall_time_from_job_ttl_kills_the_whole_group(
    grid: Grid, agent_client: MasterQueueClient, tmp_path: Path
) -> None:
    # The job starts a grandchild that would outlive it: both must go.
    script = (
        "import subprocess, time, sys; p = subprocess.Popen(['sleep', '300']);"
        "print(p.pid, flush=True); time.sleep(300)"
    )
    c = await claim(grid, agent_client, sys.executable, "-c", script, ttl_s=1)
    runner = BatchRunner(agent_client, tmp_path / "sb", "runner-1")
    started = time.monotonic()
    result = await runner.run(c, BatchLimits(slot_left_s=60, grace_s=0.5), asyncio.Event())
    assert time.monotonic() - started < 5
    assert result.outcome == "timeout"
    assert result.exit_code == 124
    assert result.reported_state == "ERROR_E"
    grandchild = int((result.sandbox / "stdout.txt").read_text().split()[0])
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"
    record = await grid.user.get_job(c.job.id)
    assert record.exit_code == 124


async def test_slot_end_limits_wall_time_below_job_ttl(
    grid: Grid, agent_client: MasterQueueClient, tmp_path: Path
) -> None:
    c = await claim(grid, agent_client, "sleep", "60", ttl_s=3600)
    runner = BatchRunner(agent_client, tmp_path / "sb", "runner-1")
    started = time.monotonic()
    result = await runner.run(c, BatchLimits(slot_left_s=1.0, grace_s=0.5), asyncio.Event())
    assert result.outcome == "timeout"
    assert time.monotonic() - started < 4


async def test_stop_gives_grace_then_kills_and_reports(
    grid: Grid, agent_client: MasterQueueClient, tmp_path: Path
) -> None:
    # Ignores SIGTERM: only SIGKILL after the grace period ends it.
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    c = await claim(grid, agent_client, sys.executable, "-c", script)
    runner = BatchRunner(agent_client, tmp_path / "sb", "runner-1")
    stopping = asyncio.Event()
    task = asyncio.create_task(runner.run(c, BatchLimits(slot_left_s=60, grace_s=1.0), stopping))
    await asyncio.sleep(1.0)
    stopping.set()
    stopped = time.monotonic()
    result = await task
    waited = time.monotonic() - stopped
    assert 0.9 <= waited < 4, f"grace 1 s, took {waited:.2f}s"
    assert result.outcome == "stopped"
    assert result.exit_code == 137
    # The agent's stop is not the job's failure: it goes back to the queue.
    assert result.reported_state == "WAITING"
    record = await grid.user.get_job(c.job.id)
    assert record.attempts == 0
    assert record.exit_code is None


async def test_missing_command_is_reported_as_error(
    grid: Grid, agent_client: MasterQueueClient, tmp_path: Path
) -> None:
    c = await claim(grid, agent_client, "/nonexistent/podgrid-job")
    runner = BatchRunner(agent_client, tmp_path / "sb", "runner-1")
    result = await runner.run(c, BatchLimits(slot_left_s=60, grace_s=1), asyncio.Event())
    assert result.exit_code == 127
    assert result.reported_state == "ERROR_E"
    assert "cannot start" in (result.sandbox / "stderr.txt").read_text()
