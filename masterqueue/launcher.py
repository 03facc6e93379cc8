"""Launchers start one broker per request on a master host and can stop exactly that broker.

The interface is small (:class:`Launcher`): ``pick_host``, ``start`` a broker for a request with its
per-request token, ask for its ``exit_code`` (None while it runs), ``terminate``/``kill`` its
process group, and ``describe_exit`` for the FAILED reason. :class:`LocalLauncher` (the
embedded default) runs ``<broker command> --request-id ID --masterqueue URL`` as a subprocess
in its own session (so its process group holds the broker and everything it starts), with
stdout/stderr in ``<state dir>/brokers/<id>.log``, the token in ``PODGRID_TOKEN`` and, given the
master queue's sign key, the request's sign secret in ``PODGRID_SIGN_SECRET`` (environment
only, never argv; see :mod:`podgrid.masterqueue.signing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from podgrid.config import environment
from podgrid.config.processes import group_alive, signal_group
from podgrid.masterqueue.signing import SIGN_SECRET_ENV, sign_secret
from podgrid.protocol import RequestRecord

log = structlog.get_logger("podgrid.masterqueue")

TOKEN_ENV = environment.TOKEN
URL_ENV = environment.URL
REGISTRY_ENV = environment.REGISTRY_URL
LOG_TAIL_LINES = 5
LOG_TAIL_BYTES = 4096
REASON_MAX_CHARS = 1000  # the reason column holds 1024
STOP_POLL_S = 0.05  # seconds between checks while waiting for a group to exit
EXIT_UNKNOWN = -256  # the broker is gone but its exit status could not be learned
MAX_WARM_DEATHS = 3  # warm brokers that die unused before the pool is given up
WARM_EXIT_WAIT_S = 5.0  # seconds an unused warm broker gets to leave when the pool closes


@dataclass
class LaunchHandle:
    """One started broker: where it runs and how to reach its process group."""

    request_id: int
    host: str
    pid: int
    pgid: int
    log_path: Path | None
    started_at: float = field(default_factory=time.monotonic)
    final_seen_at: float | None = None  # when the loop first saw the request final
    term_sent_at: float | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Launcher(Protocol):
    """How brokers are started and stopped on master hosts."""

    def pick_host(self) -> str:
        """The master host the next broker should run on."""
        ...

    async def start(
        self, request: RequestRecord, broker_token: str, env: Mapping[str, str], host: str
    ) -> LaunchHandle:
        """Start the broker for ``request`` on ``host``; ``env`` holds PODGRID_URL and the
        registry URL. OSError when it cannot be started."""
        ...

    async def exit_code(self, handle: LaunchHandle) -> int | None:
        """The broker's exit code (negative: killed by that signal), None while it runs."""
        ...

    async def terminate(self, handle: LaunchHandle) -> None:
        """Ask the broker's whole process group to stop (SIGTERM)."""
        ...

    async def kill(self, handle: LaunchHandle) -> None:
        """Kill the broker's whole process group (SIGKILL)."""
        ...

    async def group_alive(self, handle: LaunchHandle) -> bool:
        """Whether any process of the broker's group is still running."""
        ...

    async def describe_exit(self, handle: LaunchHandle) -> str:
        """How the broker ended (exit code or signal) and the last lines of its log."""
        ...

    async def fill(self) -> None:
        """Top up what the launcher keeps ready (warm brokers); a no-op for most."""
        ...

    async def close(self) -> None:
        """Release connections and anything kept ready (the serving brokers keep running)."""
        ...


_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def clean_reason(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """``text`` safe to store as a request's reason and show its owner.

    A broker's log lines may carry bytes anyone could make it log (a header, a worker's
    name): ANSI escape sequences are dropped, every other non-printable character (control
    bytes, undecodable bytes) becomes ``?``, and the result is cut to ``limit`` characters.
    """
    text = _ANSI.sub("", text)
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def log_tail(path: Path | None) -> str:
    """The last few lines of a broker log ('' when there is none)."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
        lines = f.read().decode("utf-8", "replace").splitlines()
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:] if line.strip())


def describe_code(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``."""
    if code == EXIT_UNKNOWN:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class LocalLauncher:
    """Brokers as local subprocesses, each in its own session and process group."""

    def __init__(
        self,
        command: Sequence[str],
        log_dir: Path,
        host: str,
        *,
        sign_key: bytes | None = None,
        warm: int = 0,
    ) -> None:
        self.command = list(command)
        self.log_dir = log_dir
        self.host = host
        self.sign_key = sign_key  # None: brokers cannot sign owner certificates
        self.warm = warm  # warm brokers to keep ready (``broker serve --warm``)
        self._pool: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._warm_deaths = 0  # warm brokers in a row that died unused
        self.warm_used = 0  # requests served by a warm broker (for tests and metrics)
        self.cold_used = 0
        self._refill: asyncio.Task[None] | None = None
        self._closed = False
        self._filling = asyncio.Lock()  # the launch loop and a refill after an assignment

    def _child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        child_env = {**os.environ, **extra}
        for secret in (SIGN_SECRET_ENV, TOKEN_ENV):
            child_env.pop(secret, None)  # never a secret of our own environment
        return child_env

    async def fill(self) -> None:
        """Keep ``warm`` warm brokers ready (dead ones replaced; three deaths in a row stop it)."""
        async with self._filling:
            await self._fill()

    async def _fill(self) -> None:
        alive = []
        for proc, log_path in self._pool:
            if proc.poll() is None:
                alive.append((proc, log_path))
            else:
                self._warm_deaths += 1
                log.warning("launcher.warm_broker_died", code=proc.returncode, log=str(log_path))
        self._pool = alive
        if self._warm_deaths >= MAX_WARM_DEATHS:
            if self.warm:
                log.error("launcher.warm_pool_off", deaths=self._warm_deaths)
            self.warm = 0
        while len(self._pool) < self.warm and not self._closed:
            spawned = await asyncio.to_thread(self._spawn_warm)
            if self._closed:  # closed while it started: it never joins the pool
                self._stop_unused([spawned])
                await asyncio.to_thread(spawned[0].wait)
                break
            self._pool.append(spawned)

    def _spawn_warm(self) -> tuple[subprocess.Popen[bytes], Path]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"warm-{os.getpid()}-{time.monotonic_ns()}.log"
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(  # noqa: S603 - the configured broker command
                [*self.command, "--warm"],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._child_env({}),
                start_new_session=True,
                close_fds=True,
            )
        return proc, log_path

    def _take_warm(self) -> tuple[subprocess.Popen[bytes], Path] | None:
        while self._pool:
            proc, log_path = self._pool.pop(0)
            if proc.poll() is None:
                return proc, log_path
        return None

    def pick_host(self) -> str:
        """This host."""
        return self.host

    async def start(
        self, request: RequestRecord, broker_token: str, env: Mapping[str, str], host: str
    ) -> LaunchHandle:
        """Spawn the broker here; OSError when the command cannot be run."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{request.id}.log"
        secrets = {TOKEN_ENV: broker_token}
        if self.sign_key is not None:
            secrets[SIGN_SECRET_ENV] = sign_secret(self.sign_key, request.id)
        warm = self._take_warm()
        if warm is not None:
            handle = await self._assign(warm, request, {**env, **secrets}, host, log_path)
            if handle is not None:
                return handle
        self.cold_used += 1
        argv = [*self.command, "--request-id", str(request.id)]
        argv += ["--masterqueue", env[URL_ENV]]
        child_env = {**self._child_env(env), **secrets}
        with log_path.open("ab") as log_file:
            proc = await asyncio.to_thread(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,
                close_fds=True,
            )
        return LaunchHandle(
            request_id=request.id,
            host=host,
            pid=proc.pid,
            pgid=proc.pid,
            log_path=log_path,
            process=proc,
        )

    async def _assign(
        self,
        warm: tuple[subprocess.Popen[bytes], Path],
        request: RequestRecord,
        env: Mapping[str, str],
        host: str,
        log_path: Path,
    ) -> LaunchHandle | None:
        """Hand ``request`` to a warm broker on its stdin; None if it died meanwhile."""
        proc, warm_log = warm
        names = {k: v for k, v in env.items() if k != URL_ENV}
        line = json.dumps({"request_id": request.id, "masterqueue": env[URL_ENV], "env": names})
        assert proc.stdin is not None
        try:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.close()
        except OSError:
            log.warning("launcher.warm_broker_gone", request_id=request.id)
            return None
        with contextlib.suppress(OSError):
            warm_log.replace(log_path)  # the open log file follows: one log per request
        self.warm_used += 1
        if self._refill is None or self._refill.done():
            self._refill = asyncio.get_running_loop().create_task(self.fill())  # in background
        return LaunchHandle(
            request_id=request.id,
            host=host,
            pid=proc.pid,
            pgid=proc.pid,
            log_path=log_path,
            process=proc,
        )

    async def exit_code(self, handle: LaunchHandle) -> int | None:
        """The broker's exit code; reaps it once it exited."""
        return self._poll(handle)

    @staticmethod
    def _poll(handle: LaunchHandle) -> int | None:
        if handle.process is None:  # not our child: it runs while its group exists
            return None if group_alive(handle.pgid) else EXIT_UNKNOWN
        return handle.process.poll()

    async def terminate(self, handle: LaunchHandle) -> None:
        """SIGTERM to the broker's process group."""
        signal_group(handle.pgid, signal.SIGTERM)

    async def kill(self, handle: LaunchHandle) -> None:
        """SIGKILL to the broker's process group, then reap the broker."""
        signal_group(handle.pgid, signal.SIGKILL)
        if handle.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(handle.process.wait, 1.0)

    async def group_alive(self, handle: LaunchHandle) -> bool:
        """Whether any process of the group is still running (the broker is reaped first)."""
        if self._poll(handle) is None:
            return True
        return group_alive(handle.pgid)

    async def describe_exit(self, handle: LaunchHandle) -> str:
        """Exit status plus the log tail, short enough for the request's reason."""
        code = self._poll(handle)
        status = "still running" if code is None else describe_code(code)
        tail = log_tail(handle.log_path)
        text = f"{status}; last log lines: {tail}" if tail else status
        return clean_reason(text)

    @staticmethod
    def _stop_unused(pool: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
        for proc, _ in pool:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # EOF: an unused warm broker leaves by itself

    async def close(self) -> None:
        """Stop the warm brokers (they hold no request: EOF on stdin makes them exit)."""
        self._closed = True
        if self._refill is not None:
            with contextlib.suppress(Exception):
                await self._refill
        pool, self._pool, self.warm = self._pool, [], 0
        self._stop_unused(pool)
        for proc, _ in pool:
            try:
                await asyncio.to_thread(proc.wait, WARM_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)


async def stop(launcher: Launcher, handle: LaunchHandle, grace_s: float) -> None:
    """SIGTERM the broker's group, wait up to ``grace_s``, then SIGKILL whatever is left."""
    await launcher.terminate(handle)
    deadline = time.monotonic() + grace_s
    # Process exit has no event to wait on here (the group may hold grandchildren): poll.
    while time.monotonic() < deadline and await launcher.group_alive(handle):  # noqa: ASYNC110
        await asyncio.sleep(STOP_POLL_S)
    if await launcher.group_alive(handle):
        await launcher.kill(handle)
