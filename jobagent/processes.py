"""The job agent's process calls: supervised payloads, and stopping their process groups.

Workers and batch jobs each run under :mod:`podgrid.jobagent.supervise` (:func:`spawn_supervised`)
as the leader of their own session, so they die with the agent (even a SIGKILLed one) and
stopping one stops its whole group (:mod:`podgrid.config.processes`, with this agent's events).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from podgrid.config import processes
from podgrid.config.processes import GroupLeader, exit_status
from podgrid.jobagent import supervise
from podgrid.jobagent.payload import DEFAULT_PATH

SUPERVISOR: Final = str(Path(supervise.__file__).resolve())


async def spawn_supervised(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    user: int | None,
    group: int | None,
    own_env: Mapping[str, str] | None = None,
    stdout: int = asyncio.subprocess.PIPE,
    stderr: int = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """Start ``argv`` under the supervisor (a new session) and hand it the payload on stdin.

    ``env`` is the payload's whole environment; ``own_env`` the supervisor's (default: PATH
    only). The returned process is the supervisor: its exit status is the payload's, and its
    stdout/stderr are the payload's.
    """
    doc = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "user": user, "group": group}
    if own_env is None:
        own_env = {"PATH": os.environ.get("PATH", DEFAULT_PATH)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        SUPERVISOR,
        str(os.getpid()),
        cwd=cwd,
        env=dict(own_env)
        if own_env is not None
        else {"PATH": os.environ.get("PATH", DEFAULT_PATH)},
        stdin=asyncio.subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(doc).encode())
        await process.stdin.drain()
        process.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it died before reading: its exit code and stderr say why
    return process


async def stop_group(
    process: GroupLeader, grace_s: float, first: signal.Signals = signal.SIGTERM
) -> int:
    """``first`` to the child's group, SIGKILL to what is left after ``grace_s``; exit code."""
    return await processes.stop_group(process, grace_s, first, killed_event="jobagent.group_killed")


__all__ = ["SUPERVISOR", "exit_status", "spawn_supervised", "stop_group"]
