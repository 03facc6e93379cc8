"""Stopping exactly our own children: each runs in its own session (process group).

A child started with ``start_new_session=True`` leads a process group whose id is its pid;
signalling that group reaches the child and everything it started, and nothing else. Before
signalling we check that the group still exists, so a recycled id is never hit by mistake
after the group is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Final

import psutil
import structlog

log = structlog.get_logger("podgrid.jobagent")

POLL_S: Final = 0.05  # seconds between checks while waiting for a group to end


def group_members(pgid: int) -> list[psutil.Process]:
    """The live processes of group ``pgid`` (zombies excluded)."""
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _has_members(pgid: int) -> bool:
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("jobagent.signal_refused", pgid=pgid, signal=sig.name)
        return False
    return True


async def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait until no live process is left in the group; False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if not await asyncio.to_thread(group_members, pgid):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL_S)


async def stop_group(
    process: asyncio.subprocess.Process, grace_s: float, first: signal.Signals = signal.SIGTERM
) -> int:
    """``first`` to the child's group, SIGKILL to what is left after ``grace_s``; exit code."""
    pgid = process.pid  # the child leads its own session
    if process.returncode is None or await asyncio.to_thread(_has_members, pgid):
        signal_group(pgid, first)
        try:
            await asyncio.wait_for(process.wait(), timeout=grace_s)
        except TimeoutError:
            log.warning("jobagent.group_killed", pgid=pgid, grace_s=grace_s)
        # Children of the leader may outlive it: the group goes, not only the leader.
        if not await wait_group_gone(pgid, 0.0 if process.returncode is None else 0.2):
            signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()
    await wait_group_gone(pgid, 5.0)
    assert process.returncode is not None
    return process.returncode


def exit_status(returncode: int) -> int:
    """The shell's convention: a signal N is reported as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
