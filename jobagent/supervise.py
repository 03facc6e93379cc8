"""The batch job's supervisor: the job dies with its agent, and nothing of the agent leaks in.

The agent starts this file (by path, ``python -I -S``: stdlib only, no site, no ``PYTHON*``
variables, so nothing in the job's environment reaches a process of the agent's uid) as the
leader of a new session, and writes one JSON document to its stdin::

    {"argv": [...], "env": {...}, "cwd": "...", "user": uid | null, "group": gid | null}

The supervisor then

1. asks the kernel for :data:`PARENT_GONE` when its parent (the agent's main thread) dies
   (``prctl(PR_SET_PDEATHSIG)``), and checks ``getppid()`` afterwards: an agent that died
   before that leaves no job behind;
2. starts the job in its own process group (the supervisor's), under the payload uid when one
   is given, with ``PR_SET_PDEATHSIG = SIGKILL`` set for the job's leader after the uid switch
   (the kernel clears it on a credential change), and checks ``getppid()`` there too;
3. waits for the job and exits with its status (``128 + N`` for a signal N; 127 with a message
   on stderr when it cannot be started at all: a bad argv, a missing program, anything).

When the agent dies, the kernel sends :data:`PARENT_GONE`; the supervisor SIGKILLs its whole
process group (the job, everything the job started that stayed in the group, and itself). The
agent's own SIGTERM to the group is meant for the job: the supervisor keeps waiting, so the
job's grace period works as before, and the agent's SIGKILL after it ends them all.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from types import FrameType
from typing import Any, Final

PR_SET_PDEATHSIG: Final = 1
PARENT_GONE: Final = signal.SIGUSR1  # what the kernel sends us when the agent dies
CANNOT_START: Final = 127  # like a shell for a command it cannot run
_libc = ctypes.CDLL(None, use_errno=True)


def set_parent_death_signal(sig: int) -> None:
    """``prctl(PR_SET_PDEATHSIG, sig)`` for the calling thread's process (OSError if refused)."""
    if _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def _kill_group() -> None:
    """SIGKILL our whole process group: the job's processes and this supervisor."""
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _run(spec: dict[str, Any], agent_pid: int) -> int:
    def on_parent_gone(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != agent_pid:  # a stray SIGUSR1 from the job while the agent lives: no
            _kill_group()

    def ignore(signum: int, frame: FrameType | None) -> None:
        """The group's SIGTERM/SIGINT is the job's to handle; we wait for it to end."""

    signal.signal(PARENT_GONE, on_parent_gone)
    signal.signal(signal.SIGTERM, ignore)  # Python handlers reset to default across exec
    signal.signal(signal.SIGINT, ignore)
    set_parent_death_signal(PARENT_GONE)
    if os.getppid() != agent_pid:
        print("podgrid: the agent is gone; the job is not started", file=sys.stderr)
        return CANNOT_START
    supervisor = os.getpid()

    def in_job_leader() -> None:  # runs after the uid switch, before exec
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != supervisor:
            os._exit(CANNOT_START)

    argv = spec["argv"]
    try:
        job = subprocess.Popen(  # noqa: S603 - the job's own argv, run as the payload
            argv,
            env=spec["env"],
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            user=spec.get("user"),
            group=spec.get("group"),
            extra_groups=[] if spec.get("user") is not None else None,
            preexec_fn=in_job_leader,
        )
    except Exception as e:  # whatever it is (ValueError for a NUL, OSError...): not started
        first = argv[0] if isinstance(argv, list) and argv else argv
        print(f"podgrid: cannot start {first!r}: {type(e).__name__}: {e}", file=sys.stderr)
        return CANNOT_START
    code = job.wait()
    return 128 - code if code < 0 else code


def main() -> int:
    """Read the job from stdin and run it; the job's exit status."""
    agent_pid = int(sys.argv[1])
    try:
        spec = json.loads(sys.stdin.buffer.read())
        sys.stdin.close()
    except (OSError, ValueError) as e:
        print(f"podgrid: the supervisor got no job: {e}", file=sys.stderr)
        return CANNOT_START
    return _run(spec, agent_pid)


if __name__ == "__main__":
    sys.exit(main())
