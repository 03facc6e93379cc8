"""The agent's side of the fork server (:mod:`podgrid.jobagent.zygote`): workers in milliseconds.

A cold ``dask worker`` spends most of its start importing Dask (0.3 s on a quiet machine, a
second on a loaded one). The agent starts one zygote at start-up, with Dask imported, and
:meth:`ForkServer.spawn` forks each worker from it. A forked worker is what a supervised one is
(:func:`podgrid.jobagent.processes.spawn_supervised`): the leader of its own session, in the
allow-list environment, under the payload uid, killed by the kernel when the zygote dies, which
dies with the agent. :class:`ForkedProcess` looks to the agent like an
``asyncio.subprocess.Process`` (``pid``, ``returncode``, ``wait()``, ``stdout``), so stopping a
worker's group works as before. When the zygote is not ready or is gone, the caller starts the
worker cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger("podgrid.jobagent")

READY_TIMEOUT_S: Final = 60.0  # seconds for the zygote to import Dask and say ready
SPAWN_TIMEOUT_S: Final = 10.0  # seconds for one fork to be confirmed
MAX_PACKET: Final = 256 * 1024


class ForkedProcess:
    """A worker forked by the zygote: pid, output stream, exit code when it ends."""

    def __init__(self, stdout: asyncio.StreamReader) -> None:
        self.pid = 0  # known once the zygote forked
        self.stdout = stdout
        self.returncode: int | None = None
        self._ended = asyncio.Event()

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    async def wait(self) -> int:
        """The exit code (negative: killed by that signal), once the zygote reaped it."""
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode


class ForkServer:
    """One zygote per agent; ``spawn`` forks a worker from it."""

    def __init__(self, env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._ids = itertools.count(1)
        self.forks = 0  # workers forked (for tests)

    @property
    def starting(self) -> bool:
        """Whether the zygote runs but is still importing Dask."""
        return not self._ready.is_set() and self._proc is not None and self._proc.returncode is None

    @property
    def alive(self) -> bool:
        """Whether the zygote runs and said it is ready."""
        return self._ready.is_set() and self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the zygote (it imports Dask in the background; see :meth:`wait_ready`)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as err:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "podgrid.jobagent.zygote",
                str(os.getpid()),
                stdin=theirs.fileno(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        theirs.close()
        mine.setblocking(False)
        self._sock = mine
        self._reader = asyncio.create_task(self._read(), name="jobagent-forkserver")

    async def wait_ready(self, timeout_s: float) -> bool:
        """Whether the zygote is ready within ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        return self.alive

    async def _read(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self._sock, MAX_PACKET):
                self._dispatch(json.loads(data))
        except (OSError, ValueError) as e:
            log.warning("jobagent.forkserver_lost", error=str(e))
        finally:
            self._ready.clear()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(OSError("the fork server is gone"))
            self._pending.clear()

    def _dispatch(self, doc: dict[str, Any]) -> None:
        if "ready" in doc:
            log.info("jobagent.forkserver_ready", pid=doc["ready"])
            self._ready.set()
            return
        ident = int(doc.get("id", 0))
        if "pid" in doc and (future := self._pending.pop(ident, None)) is not None:
            if (child := self._children.get(ident)) is not None:
                child.pid = int(doc["pid"])
            future.set_result(int(doc["pid"]))
        elif "error" in doc and (future := self._pending.pop(ident, None)) is not None:
            future.set_exception(OSError(str(doc["error"])))
        elif "exit" in doc and (child := self._children.pop(ident, None)) is not None:
            child._exited(int(doc["exit"]))

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        user: int | None,
        group: int | None,
    ) -> ForkedProcess:
        """Fork a ``dask worker`` with ``argv`` (its arguments, without the program).

        OSError when the zygote is not ready or the fork fails: start the worker cold then.
        """
        if not self.alive or self._sock is None:
            raise OSError("the fork server is not ready")
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        try:
            stdout = asyncio.StreamReader()
            ident = next(self._ids)
            doc = {"id": ident, "argv": list(argv), "env": dict(env), "cwd": str(cwd)}
            doc.update({"user": user, "group": group})
            future: asyncio.Future[int] = loop.create_future()
            self._pending[ident] = future
            child = ForkedProcess(stdout)
            self._children[ident] = child  # before the fork: its exit may come right after
            socket.send_fds(self._sock, [json.dumps(doc).encode()], [write_fd])
        except BaseException:
            os.close(read_fd)
            self._pending.pop(ident, None)
            self._children.pop(ident, None)
            raise
        finally:
            os.close(write_fd)  # the child has its copy; EOF comes when it ends
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), pipe)
        try:
            async with asyncio.timeout(SPAWN_TIMEOUT_S):
                await future
        except BaseException:
            self._children.pop(ident, None)
            raise
        self.forks += 1
        return child

    async def close(self) -> None:
        """Stop the zygote (its children die with it by their death signal)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None and self._proc.returncode is None:
            try:
                async with asyncio.timeout(5.0):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
