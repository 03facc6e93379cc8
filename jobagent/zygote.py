"""The agent's fork server: Dask imported once, a worker forked from it in milliseconds.

``python -m podgrid.jobagent.zygote AGENT_PID`` is started by the agent
(:class:`podgrid.jobagent.forkserver.ForkServer`) with the workers' allow-list environment, so
it never holds an agent secret, and with a ``SOCK_SEQPACKET`` Unix socket as its stdin. It
imports ``distributed`` and the ``dask worker`` command, then serves one request per packet::

    {"id": N, "argv": [...], "env": {...}, "cwd": "...", "user": uid | null, "group": gid | null}

with one file descriptor attached: the write end of the pipe the worker's output goes to. It
forks; the child leads a new session (its own process group, stopped as a whole by the agent),
asks for ``SIGKILL`` when the zygote dies (``PR_SET_PDEATHSIG``; the zygote asks the same of the
agent, so a SIGKILLed agent takes both down), switches to the payload uid and gid, replaces its
environment, and runs ``dask worker`` with ``argv``. The zygote answers ``{"id", "pid"}`` at
once and ``{"id", "exit"}`` (``os.waitstatus_to_exitcode``: negative for a signal) when the
child is reaped. End of input (the agent closed the socket or died): the zygote exits, and its
children follow it by their death signal.

Forking is safe here: the zygote runs no thread and no event loop (importing ``distributed``
starts neither); each child starts its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
from typing import Any, Final

from podgrid.jobagent.supervise import CANNOT_START, set_parent_death_signal

MAX_PACKET: Final = 256 * 1024
PR_SET_NAME: Final = 15
COMM_PREFIX: Final = "dw "  # a forked worker's process name (ps, top): "dw <worker name>"
COMM_MAX: Final = 15  # bytes the kernel keeps of a process name


def worker_comm(argv: list[str]) -> str:
    """The process name of a forked worker: ``dw <its --name>``, cut to what the kernel keeps."""
    name = argv[argv.index("--name") + 1] if "--name" in argv[:-1] else "worker"
    return (COMM_PREFIX + name)[:COMM_MAX]


def _set_comm(text: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(text.encode()), 0, 0, 0)


def _child(spec: dict[str, Any], out_fd: int, zygote: int) -> int:
    """In the forked child: become the worker; its exit code (never returns otherwise)."""
    os.setsid()
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != zygote:
        return CANNOT_START
    _set_comm(worker_comm(list(spec["argv"])))  # tells it from the zygote in ps and psutil
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 4096)
    group, user = spec.get("group"), spec.get("user")
    if group is not None:
        os.setgroups([])
        os.setgid(int(group))
    if user is not None:
        os.setuid(int(user))
        set_parent_death_signal(signal.SIGKILL)  # the kernel cleared it with the uid change
        if os.getppid() != zygote:
            return CANNOT_START
    os.chdir(spec["cwd"])
    before = {k: v for k, v in os.environ.items() if k.startswith("DASK_")}
    os.environ.clear()
    os.environ.update(spec["env"])
    import dask.config
    from distributed.cli import dask_worker

    if before != {k: v for k, v in os.environ.items() if k.startswith("DASK_")}:
        dask.config.refresh()  # this worker's own DASK_* variables
    sys.argv = ["dask-worker", *spec["argv"]]
    try:
        dask_worker.main()
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


class Zygote:
    """The fork loop: requests on ``sock``, children reaped on SIGCHLD."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: dict[int, int] = {}  # pid -> request id
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up fd gets the byte

    def _send(self, doc: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the agent is gone; we leave at the next read
            self.sock.send(json.dumps(doc).encode())

    def _fork(self, data: bytes, fds: list[int]) -> None:
        try:
            spec = json.loads(data)
            ident = int(spec["id"])
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            return
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self._send({"id": ident, "error": "one output descriptor is needed"})
            return
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            code = CANNOT_START
            try:
                code = _child(spec, fds[0], zygote)
            except BaseException as e:  # anything: the worker did not start
                os.write(2, f"podgrid: the worker cannot start: {type(e).__name__}: {e}\n".encode())
            os._exit(code)
        os.close(fds[0])
        self.children[pid] = ident
        self._send({"id": ident, "pid": pid})

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ident = self.children.pop(pid, None)
            if ident is not None:
                self._send({"id": ident, "exit": os.waitstatus_to_exitcode(status)})

    def run(self) -> int:
        """Serve until the agent closes the socket."""
        while True:
            sock = self.sock.fileno()
            ready, _, _ = select.select([sock, self.wake_r], [], [])
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
                self._reap()
            if sock in ready:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_PACKET, 4)
                if not data:
                    return 0
                self._fork(data, fds)
            self._reap()


def main() -> int:
    """Check the agent, import Dask, say ready, serve."""
    agent = int(sys.argv[1])
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != agent:
        return CANNOT_START
    sock = socket.socket(fileno=0)
    # The warm part, imported before any fork: the worker command and what a worker imports
    # only when it starts (its HTTP server for /health and /metrics).
    import distributed.cli.dask_worker
    import distributed.http.health
    import distributed.http.statics
    import distributed.http.worker.prometheus.core  # noqa: F401
    import prometheus_client  # noqa: F401
    import tornado.platform.asyncio  # noqa: F401

    sock.send(json.dumps({"ready": os.getpid()}).encode())
    return Zygote(sock).run()


if __name__ == "__main__":
    sys.exit(main())
