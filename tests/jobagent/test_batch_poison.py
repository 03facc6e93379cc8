"""A claim the protocol would refuse, given to a real BatchRunner: reported 127, no exception.

The master queue now refuses these at submit; this is the runner's own line of defence, for
a job stored before the check or by anything that bypasses it (``JobSpec.model_construct``).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from podgrid.jobagent.batch import BatchLimits, BatchRunner
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import JobSpec, SlotDescription
from tests.jobagent.grid import running_grid

SLOT = SlotDescription(agent_id="poison-1", site="S", cores=1, memory_mb=1024, ttl_s=3600)
POISONS: dict[str, dict[str, Any]] = {
    "nul_in_argv": {"command": ["echo", "a\0b"]},
    "equals_in_env_name": {"command": ["true"], "env": {"A=B": "x"}},
    "nul_in_env_name": {"command": ["true"], "env": {"A\0": "x"}},
    "nul_in_env_value": {"command": ["true"], "env": {"A": "x\0"}},
    "no_argv_at_all": {"command": []},
    "argv_not_a_list": {"command": None},
}


@pytest.mark.parametrize("poison", list(POISONS))
async def test_an_unstartable_claim_is_reported_127_and_the_runner_returns(
    tmp_path: Path, poison: str
) -> None:
    async with running_grid(tmp_path) as grid:
        await grid.submit_job("true")
        async with MasterQueueClient(grid.mq_url, grid.agent_token) as client:
            claim = await client.match(SLOT)
            assert claim is not None
            spec = JobSpec.model_construct(**POISONS[poison])  # no validation at all
            claim = claim.model_copy(update={"job": claim.job.model_copy(update={"spec": spec})})
            runner = BatchRunner(client, tmp_path / "sb", SLOT.agent_id)
            result = await runner.run(
                claim, BatchLimits(slot_left_s=60, grace_s=1), asyncio.Event()
            )
        assert result.exit_code == 127
        assert result.reported_state == "ERROR_E"
        assert "cannot start" in (result.sandbox / "stderr.txt").read_text()
        record = await grid.user.get_job(claim.job.id)
        assert (str(record.state), record.exit_code) == ("ERROR_E", 127)
        # The same runner goes on with a good job.
        await grid.submit_job(sys.executable, "-c", "print('next')")
        async with MasterQueueClient(grid.mq_url, grid.agent_token) as client:
            nxt = await client.match(SLOT)
            assert nxt is not None
            runner = BatchRunner(client, tmp_path / "sb", SLOT.agent_id)
            done = await runner.run(nxt, BatchLimits(slot_left_s=60, grace_s=1), asyncio.Event())
        assert done.reported_state == "DONE"
