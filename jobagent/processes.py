"""The job agent's process-group calls: :mod:`podgrid.config.processes` with its event names.

Workers and batch jobs each lead their own session; stopping one stops its whole group.
"""

from __future__ import annotations

import asyncio
import signal

from podgrid.config import processes
from podgrid.config.processes import exit_status


async def stop_group(
    process: asyncio.subprocess.Process, grace_s: float, first: signal.Signals = signal.SIGTERM
) -> int:
    """``first`` to the child's group, SIGKILL to what is left after ``grace_s``; exit code."""
    return await processes.stop_group(process, grace_s, first, killed_event="jobagent.group_killed")


__all__ = ["exit_status", "stop_group"]
