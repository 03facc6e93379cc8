"""The ``ssh`` launcher: brokers on the master hosts of ``podMasterHosts``, started over SSH.

Hosts are used round-robin. On the chosen host the broker runs in its own session
(``setsid``), so ``kill -9 -PGID`` reaches it and everything it started; a small ``sh``
wrapper (the session leader) writes the broker's exit status to ``<log dir>/<id>.exit``. The
per-request token, the request's sign secret and the ApMon password travel on the SSH
channel's stdin (``NAME=value`` lines) into the environment, never in a command line (which
any user of the host can read in ``ps``) or on disk. One SSH connection per host is kept
open and re-opened when it drops.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import asyncssh

from podgrid.config import environment
from podgrid.masterqueue.launcher import (
    EXIT_UNKNOWN,
    LOG_TAIL_LINES,
    REASON_MAX_CHARS,
    TOKEN_ENV,
    URL_ENV,
    LaunchHandle,
    describe_code,
)
from podgrid.masterqueue.signing import SIGN_SECRET_ENV, sign_secret
from podgrid.protocol import RequestRecord

# Never in a remote command line: sent on stdin.
SECRET_NAMES = frozenset({environment.TOKEN, environment.SIGN_SECRET, environment.APMON_PASSWORD})

SSH_CONNECT_TIMEOUT_S = 10.0
SSH_COMMAND_TIMEOUT_S = 20.0


class SshLauncher:
    """Brokers on remote master hosts, one SSH connection per host."""

    def __init__(
        self,
        hosts: Sequence[str],
        command: Sequence[str],
        log_dir: str,
        *,
        port: int = 22,
        username: str | None = None,
        client_keys: Sequence[Path] = (),
        known_hosts: Path | None = None,
        sign_key: bytes | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("the ssh launcher needs at least one master host (podMasterHosts)")
        self.hosts = list(hosts)
        self.command = list(command)
        self.log_dir = PurePosixPath(log_dir)
        self.port = port
        self.username = username
        self.client_keys = [str(k) for k in client_keys]
        self.known_hosts = str(known_hosts) if known_hosts is not None else ()
        self.sign_key = sign_key  # None: brokers cannot sign owner certificates
        self._next = 0
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._lock = asyncio.Lock()

    def pick_host(self) -> str:
        """The next master host, round-robin."""
        host = self.hosts[self._next % len(self.hosts)]
        self._next += 1
        return host

    async def _conn(self, host: str) -> asyncssh.SSHClientConnection:
        async with self._lock:
            conn = self._conns.get(host)
            if conn is not None and not conn.is_closed():
                return conn
            try:
                conn = await asyncio.wait_for(
                    asyncssh.connect(
                        host,
                        port=self.port,
                        username=self.username,
                        client_keys=self.client_keys or (),
                        known_hosts=self.known_hosts,
                    ),
                    SSH_CONNECT_TIMEOUT_S,
                )
            except (asyncssh.Error, OSError, TimeoutError) as e:
                raise OSError(f"ssh to {host}:{self.port} failed: {e}") from e
            self._conns[host] = conn
            return conn

    async def _run(self, host: str, script: str, stdin: str | None = None) -> str:
        """Run ``script`` with ``sh`` on ``host``; its stdout (OSError on SSH trouble)."""
        conn = await self._conn(host)
        try:
            result = await asyncio.wait_for(
                conn.run(f"sh -c {shlex.quote(script)}", input=stdin, check=False),
                SSH_COMMAND_TIMEOUT_S,
            )
        except (asyncssh.Error, OSError, TimeoutError) as e:
            self._conns.pop(host, None)
            raise OSError(f"ssh command on {host} failed: {e}") from e
        return str(result.stdout or "")

    def _paths(self, request_id: int) -> tuple[str, str]:
        base = self.log_dir / str(request_id)
        return f"{base}.log", f"{base}.exit"

    async def start(
        self, request: RequestRecord, broker_token: str, env: Mapping[str, str], host: str
    ) -> LaunchHandle:
        """Start the broker on ``host`` in its own session; OSError when that fails."""
        log, exit_file = self._paths(request.id)
        argv = [*self.command, "--request-id", str(request.id), "--masterqueue", env[URL_ENV]]
        secrets = {TOKEN_ENV: broker_token}
        if self.sign_key is not None:
            secrets[SIGN_SECRET_ENV] = sign_secret(self.sign_key, request.id)
        plain: dict[str, str] = {}
        for name, value in env.items():
            (secrets if name in SECRET_NAMES else plain)[name] = value
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in plain.items())
        wrapper = f'{shlex.join(argv)}; echo $? > "$0"'
        # Each stdin line NAME=value is exported; an empty line ends them.
        read_secrets = 'while IFS= read -r kv && [ -n "$kv" ]; do export "$kv" || exit 1; done'
        script = (
            f"mkdir -p {shlex.quote(str(self.log_dir))} && rm -f {shlex.quote(exit_file)} && "
            f"{read_secrets} && export {exports} || exit 1\n"
            f"setsid sh -c {shlex.quote(wrapper)} {shlex.quote(exit_file)} "
            f"</dev/null >>{shlex.quote(log)} 2>&1 &\necho $!"
        )
        lines = "".join(f"{k}={v}\n" for k, v in secrets.items() if "\n" not in v)
        out = await self._run(host, script, stdin=lines + "\n")
        try:
            pid = int(out.strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise OSError(f"broker did not start on {host}: {out.strip()!r}") from e
        return LaunchHandle(request_id=request.id, host=host, pid=pid, pgid=pid, log_path=Path(log))

    async def exit_code(self, handle: LaunchHandle) -> int | None:
        """None while the session leader runs; its recorded exit status (or EXIT_UNKNOWN)."""
        _, exit_file = self._paths(handle.request_id)
        script = (
            f'st=$(ps -o stat= -p {handle.pid} 2>/dev/null); case "$st" in '
            f"''|Z*) cat {shlex.quote(exit_file)} 2>/dev/null || echo gone;; *) echo running;; esac"
        )
        out = (await self._run(handle.host, script)).strip()
        if out == "running":
            return None
        code = int(out) if out.lstrip("-").isdigit() else EXIT_UNKNOWN
        # sh reports a broker killed by signal N as 128+N; show it the way Popen does.
        return -(code - 128) if 128 < code < 160 else code

    async def terminate(self, handle: LaunchHandle) -> None:
        """SIGTERM to the broker's session on its host."""
        await self._run(handle.host, f"kill -15 -{handle.pgid} 2>/dev/null; true")

    async def kill(self, handle: LaunchHandle) -> None:
        """SIGKILL to the broker's session on its host."""
        await self._run(handle.host, f"kill -9 -{handle.pgid} 2>/dev/null; true")

    async def group_alive(self, handle: LaunchHandle) -> bool:
        """Whether a non-zombie process of the group still runs on the host."""
        script = f"ps -e -o pgid=,stat= | awk '$1 == {handle.pgid} && $2 !~ /^Z/' | head -n 1"
        return bool((await self._run(handle.host, script)).strip())

    async def describe_exit(self, handle: LaunchHandle) -> str:
        """Exit status plus the tail of the remote log."""
        code = await self.exit_code(handle)
        status = "still running" if code is None else describe_code(code)
        log, _ = self._paths(handle.request_id)
        tail = await self._run(handle.host, f"tail -n {LOG_TAIL_LINES} {shlex.quote(log)}")
        lines = " | ".join(line.strip() for line in tail.splitlines() if line.strip())
        text = f"{status} on {handle.host}; last log lines: {lines}" if lines else status
        return text[:REASON_MAX_CHARS]

    async def fill(self) -> None:
        """Nothing is kept ready on remote hosts (no warm brokers over SSH yet)."""

    async def close(self) -> None:
        """Close every SSH connection."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
