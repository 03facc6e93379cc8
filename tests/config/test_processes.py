"""The process-group helper against real children in their own sessions (no mocks)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import psutil
import pytest

from podgrid.config.processes import (
    exit_status,
    group_alive,
    signal_group,
    stop_group,
    wait_group_gone,
)

# The shell prints the background sleep's pid, then waits in the foreground: leader + member.
WITH_GRANDCHILD = "sleep 60 & echo $!; sleep 60"
# A leader that ignores SIGTERM (its sleep does too: ignored signals are inherited).
IGNORES_TERM = "trap '' TERM; echo ready; sleep 60"
# stop_group in a process that is a child subreaper (as integration/'s test process makes
# itself): the orphaned sleep becomes its zombie, which only it can reap.
AS_SUBREAPER = f"""
import asyncio, ctypes
from podgrid.config.processes import group_alive, stop_group
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
async def main():
    p = await asyncio.create_subprocess_exec(
        "sh", "-c", {WITH_GRANDCHILD!r}, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    grandchild = int(await p.stdout.readline())
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await stop_group(p, 5.0)
    print(code, loop.time() - started, group_alive(p.pid), grandchild)
asyncio.run(main())
"""


async def start(script: str) -> asyncio.subprocess.Process:
    """``sh -c script`` leading its own session, stdout piped."""
    return await asyncio.create_subprocess_exec(
        "sh", "-c", script, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )


async def first_line(process: asyncio.subprocess.Process) -> str:
    """The first line the child printed."""
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), 10.0)).decode().strip()


def running(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def killpg_finds(pgid: int) -> bool:
    """What the kernel says about the group, asked directly."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_stop_group_leaves_no_process_of_the_group_alive() -> None:
    process = await start(WITH_GRANDCHILD)
    grandchild = int(await first_line(process))
    assert os.getpgid(grandchild) == process.pid
    assert group_alive(process.pid)

    code = await stop_group(process, grace_s=5.0)

    assert code == -signal.SIGTERM
    assert exit_status(code) == 128 + signal.SIGTERM
    assert not killpg_finds(process.pid)
    assert not group_alive(process.pid)
    assert not running(grandchild)


async def test_stop_group_sigkills_a_group_that_ignores_sigterm_after_the_grace() -> None:
    process = await start(IGNORES_TERM)
    assert await first_line(process) == "ready"
    started = time.monotonic()

    code = await stop_group(process, grace_s=0.5)

    took_s = time.monotonic() - started
    assert code == -signal.SIGKILL
    assert exit_status(code) == 128 + signal.SIGKILL == 137
    assert 0.5 <= took_s < 5.0
    assert not group_alive(process.pid)
    assert not killpg_finds(process.pid)


async def test_stop_group_reaches_members_left_behind_by_a_leader_that_exited() -> None:
    # The member must not hold the pipe: wait() returns once the leader's pipes are closed.
    process = await start("sleep 60 >/dev/null & echo $!")
    grandchild = int(await first_line(process))
    assert await asyncio.wait_for(process.wait(), 10.0) == 0
    assert group_alive(process.pid)  # the orphaned sleep still holds the group

    code = await stop_group(process, grace_s=5.0)

    assert code == 0  # the leader's own exit, not the member's
    assert not group_alive(process.pid)
    assert not running(grandchild)


async def test_stop_group_as_a_subreaper_reaps_the_orphans_it_adopted() -> None:
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AS_SUBREAPER, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(done.communicate(), 30.0)
    assert done.returncode == 0, out
    code, took_s, alive, grandchild = out.decode().split()
    assert int(code) == -signal.SIGTERM
    assert float(took_s) < 2.0  # not the 5 s a zombie nobody reaps would cost
    assert alive == "False"
    assert not running(int(grandchild))


async def test_signalling_a_group_that_is_gone_returns_false_and_never_raises() -> None:
    process = await start("exit 3")
    assert await process.wait() == 3
    assert await wait_group_gone(process.pid, 5.0)

    assert not group_alive(process.pid)
    assert signal_group(process.pid, signal.SIGTERM) is False
    assert signal_group(process.pid, signal.SIGKILL) is False
    assert await stop_group(process, grace_s=1.0) == 3


async def test_wait_group_gone_times_out_while_the_group_lives() -> None:
    process = await start(WITH_GRANDCHILD)
    await first_line(process)
    try:
        assert await wait_group_gone(process.pid, 0.1) is False
        assert signal_group(process.pid, signal.SIGTERM) is True
        await process.wait()
        assert await wait_group_gone(process.pid, 5.0) is True
    finally:
        signal_group(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("pgid", [0, -1, os.getpgrp()])
def test_our_own_group_and_nonsense_ids_are_refused(pgid: int) -> None:
    # SIGCONT: harmless to this test run even if the guard were missing.
    with pytest.raises(ValueError, match="refusing"):
        signal_group(pgid, signal.SIGCONT)
    with pytest.raises(ValueError, match="refusing"):
        group_alive(pgid)


def test_exit_status_follows_the_shell_convention() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 143
