"""Stopping exactly our own children: each one leads its own process group (session).

A child started with ``start_new_session=True`` leads a process group whose id is its pid;
signalling that group reaches the child and everything it started, and nothing else.
``os.killpg(pgid, 0)`` tells whether the group still exists without scanning the host's
processes. It counts zombies too, so the leader (our child) is reaped before the group is
asked about; members orphaned by the leader are reaped by init, or by us when we are the
child subreaper they were re-parented to.
The kernel does not hand out a group's id as a new pid while the group still exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
from typing import Final, Protocol

import structlog

log = structlog.get_logger("podgrid.processes")

POLL_FIRST_S: Final = 0.005  # first sleep while waiting for a group; doubles up to POLL_MAX_S
POLL_MAX_S: Final = 0.05
LINGER_S: Final = 0.2  # how long the leader's children get to follow it before SIGKILL
REAP_TIMEOUT_S: Final = 5.0  # how long a SIGKILLed group gets to be reaped


class _Group(enum.Enum):
    GONE = "gone"
    OURS = "ours"
    FOREIGN = "foreign"  # it exists, but we may not signal it


def _checked(pgid: int) -> int:
    """``pgid`` itself; ValueError for 0, negatives and our own group (killpg would hit us)."""
    if pgid <= 0 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}: not a child's group")
    return pgid


def _reap_adopted(pgid: int) -> bool:
    """Reap one zombie of group ``pgid`` that is our child but not its leader; whether one was.

    Such a zombie is an orphan re-parented to us as a child subreaper: nobody else reaps it,
    and it keeps the group alive for killpg. The leader is left to its owner (asyncio, Popen).
    """
    try:
        info = os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    if info is None or info.si_pid == pgid:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(info.si_pid, os.WNOHANG)
    return True


def _probe(pgid: int) -> _Group:
    try:
        os.killpg(_checked(pgid), 0)
        while _reap_adopted(pgid):
            os.killpg(pgid, 0)
    except ProcessLookupError:
        return _Group.GONE
    except PermissionError:
        return _Group.FOREIGN
    return _Group.OURS


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still holds a process (zombies count: reap the leader).

    A group we may not signal exists but is not ours any more (logged): alive.
    """
    state = _probe(pgid)
    if state is _Group.FOREIGN:
        log.warning("processes.group_not_ours", pgid=pgid)
    return state is not _Group.GONE


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to every process of group ``pgid``; False (never raised) when it is gone."""
    try:
        os.killpg(_checked(pgid), sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("processes.signal_refused", pgid=pgid, signal=sig.name)
        return False
    return True


async def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait until group ``pgid`` has no process left; False after ``timeout_s``.

    Short, growing sleeps between ``killpg(pgid, 0)`` probes: a group that ends at once is
    seen within milliseconds, a slow one costs one syscall every POLL_MAX_S.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay_s = POLL_FIRST_S
    warned = False
    while (state := _probe(pgid)) is not _Group.GONE:
        if state is _Group.FOREIGN and not warned:
            log.warning("processes.group_not_ours", pgid=pgid)
            warned = True
        left_s = deadline - loop.time()
        if left_s <= 0:
            return False
        await asyncio.sleep(min(delay_s, left_s))
        delay_s = min(delay_s * 2, POLL_MAX_S)
    return True


class GroupLeader(Protocol):
    """A child that leads its own process group: a subprocess, or a worker the zygote forked."""

    @property
    def pid(self) -> int:
        """Its pid, which is also its process group's id."""
        ...

    @property
    def returncode(self) -> int | None:
        """Its exit code once it ended (negative: killed by that signal)."""
        ...

    async def wait(self) -> int:
        """Wait for it to end; its exit code."""
        ...


async def stop_group(
    process: GroupLeader,
    grace_s: float,
    first: signal.Signals = signal.SIGTERM,
    *,
    killed_event: str = "processes.group_killed",
    **log_fields: object,
) -> int:
    """``first`` to the child's group, SIGKILL to what is left after ``grace_s``; its exit code.

    The child must lead its own session (its pid is the group id). When the grace runs out,
    ``killed_event`` is logged (with ``pgid``, ``grace_s`` and ``log_fields``), so each caller
    keeps its own event name. Returns once the leader is reaped and the group is gone (or
    REAP_TIMEOUT_S passed).
    """
    pgid = process.pid
    if process.returncode is None or group_alive(pgid):
        signal_group(pgid, first)
        try:
            await asyncio.wait_for(process.wait(), timeout=grace_s)
        except TimeoutError:
            log.warning(killed_event, pgid=pgid, grace_s=grace_s, **log_fields)
        # The leader is reaped now (unless it outlived the grace); its children may not be.
        if process.returncode is None or not await wait_group_gone(pgid, LINGER_S):
            signal_group(pgid, signal.SIGKILL)
    code = await process.wait()
    await wait_group_gone(pgid, REAP_TIMEOUT_S)
    return code


def exit_status(returncode: int) -> int:
    """The shell's convention for a return code: killed by signal N is reported as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
