"""``podgrid masterqueue serve`` and ``podgrid token create`` as real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness.ports import free_port
from tests.masterqueue.factories import request_text

FAKE_BROKER = str(Path(__file__).with_name("fake_broker.py"))
START_TIMEOUT_S = 30.0


def podgrid(*args: str) -> list[str]:
    """argv running the ``podgrid`` command of this interpreter."""
    return [sys.executable, "-m", "podgrid", *args]


def http(method: str, url: str, token: str | None, body: bytes | None = None) -> tuple[int, Any]:
    """One blocking HTTP call; (status, parsed JSON body or None)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Served:
    """A ``podgrid masterqueue serve`` subprocess and where to reach it."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.state_dir = tmp_path / "state"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tmp_path / "serve.log"
        argv = podgrid("masterqueue", "serve", "--http", self.url.removeprefix("http://"))
        argv += ["--state-dir", str(self.state_dir), "--registry-url", "http://127.0.0.1:9"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv + list(extra), stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        """Block until ``/healthz`` answers (fail with the log when the process died)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError):
                if http("GET", self.url + "/healthz", None)[0] == 200:
                    return
            time.sleep(0.05)
        pytest.fail(f"master queue did not start: {self.log.read_text()}")

    def admin_token(self) -> str:
        """The token the first start wrote."""
        return (self.state_dir / "admin.token").read_text().strip()

    def token_create(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podgrid token create`` against this server."""
        full_env = {k: v for k, v in os.environ.items() if k != "PODGRID_TOKEN"}
        full_env.update({"PODGRID_URL": self.url, **(env or {})})
        argv = podgrid("token", "create", "--state-dir", str(self.state_dir), *args)
        return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=60)

    def terminate(self) -> int:
        """SIGTERM; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A started master queue (no launcher), stopped at the end."""
    s = Served(tmp_path, "--launcher", "none")
    try:
        s.wait_ready()
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_first_serve_writes_a_private_admin_token_and_sigterm_exits_0(
    served: Served, tmp_path: Path
) -> None:
    path = served.state_dir / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = served.admin_token()
    assert token.startswith("pgt_")
    status, _ = http("GET", served.url + "/v1/requests", token)
    assert status == 200
    assert served.terminate() == 0
    log = served.log.read_text()
    assert token not in log
    assert '"event": "masterqueue.stopped"' in log
    again = Served(tmp_path, "--launcher", "none")  # same database: no second admin token
    try:
        again.wait_ready()
        assert again.admin_token() == token
        assert again.terminate() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


def test_token_create_prints_only_a_working_token(served: Served) -> None:
    done = served.token_create("--role", "user", "--name", "alice")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    user_token = lines[0]
    assert user_token.startswith("pgt_")
    status, body = http("POST", served.url + "/v1/requests", user_token, request_text().encode())
    assert (status, body["owner"]) == (201, "alice")
    broker = served.token_create(
        "--role", "broker", "--name", "b1", "--request-id", str(body["id"])
    )
    assert broker.returncode == 0, broker.stderr
    status, got = http("GET", f"{served.url}/v1/requests/{body['id']}", broker.stdout.strip())
    assert (status, got["id"]) == (200, body["id"])
    with_env = served.token_create(
        "--role", "agent", "--name", "a", env={"PODGRID_TOKEN": served.admin_token()}
    )
    assert with_env.returncode == 0
    assert user_token not in served.log.read_text()


def test_token_create_failures(served: Served, tmp_path: Path) -> None:
    wrong = served.token_create("--role", "user", "--name", "x", env={"PODGRID_TOKEN": "pgt_no"})
    assert wrong.returncode == 2
    assert wrong.stdout == ""
    assert "401: invalid token" in wrong.stderr
    not_admin_token = served.token_create("--role", "user", "--name", "u").stdout.strip()
    refused = served.token_create(
        "--role", "user", "--name", "x", env={"PODGRID_TOKEN": not_admin_token}
    )
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "403" in refused.stderr
    missing = served.token_create("--role", "broker", "--name", "b", "--request-id", "99")
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        "podgrid token create: 404: request 99 not found",
    )
    nowhere = subprocess.run(
        podgrid("token", "create", "--role", "user", "--name", "x", "--state-dir", str(tmp_path)),
        env={**os.environ, "PODGRID_URL": f"http://127.0.0.1:{free_port()}", "PODGRID_TOKEN": "t"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nowhere.returncode == 1
    assert "cannot reach the master queue" in nowhere.stderr
    no_token = subprocess.run(
        podgrid("token", "create", "--role", "user", "--name", "x", "--state-dir", str(tmp_path)),
        env={k: v for k, v in os.environ.items() if k != "PODGRID_TOKEN"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_token.returncode == 2
    assert "no admin token" in no_token.stderr


def test_unusable_database_exits_1_and_bad_flags_exit_2(tmp_path: Path) -> None:
    s = Served(tmp_path, "--launcher", "none", "--db", "sqlite+aiosqlite:////proc/no/such.db")
    assert s.proc.wait(timeout=60) == 1
    assert "masterqueue.start_failed" in s.log.read_text()
    bad = subprocess.run(
        podgrid("masterqueue", "serve", "--http", "nowhere"), capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "expected HOST:PORT" in bad.stderr


def test_brokers_outlive_a_master_queue_shutdown(tmp_path: Path) -> None:
    s = Served(tmp_path, "--broker-command", f"{sys.executable} {FAKE_BROKER}")
    broker_pid = None
    try:
        s.wait_ready()
        token = s.token_create("--role", "user", "--name", "alice").stdout.strip()
        _, body = http("POST", s.url + "/v1/requests", token, request_text().encode())
        rid = body["id"]
        deadline = time.monotonic() + START_TIMEOUT_S
        while http("GET", f"{s.url}/v1/requests/{rid}", token)[1]["state"] != "FULL":
            assert time.monotonic() < deadline, s.log.read_text()
            time.sleep(0.05)
        log = (s.state_dir / "brokers" / f"{rid}.log").read_text()
        broker_pid = int(log.split("fake broker pid ")[1].split()[0])
        assert s.terminate() == 0
        time.sleep(0.3)
        assert psutil.Process(broker_pid).status() != psutil.STATUS_ZOMBIE
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        if broker_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(broker_pid, signal.SIGKILL)
