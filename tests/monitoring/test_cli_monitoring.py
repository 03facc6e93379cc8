"""``podgrid monitoring serve`` as a real process: ingest, query, token file, SIGTERM → 0."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from podgrid.config import default_ldif
from tests.harness.ports import free_port
from tests.monitoring.registry_helpers import send_udp
from tests.monitoring.xdr_encoder import encode


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "podgrid", "monitoring", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_started(proc: subprocess.Popen[str]) -> tuple[dict[str, object], list[str]]:
    """Read JSON log lines until ``registry.started``; returns it and the lines seen."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        event = json.loads(line)
        if event.get("event") == "registry.started":
            return event, seen
    proc.kill()
    raise AssertionError(f"registry did not start; rc={proc.wait()} log={seen}")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipe


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def test_serve_ingests_answers_and_exits_0_on_sigterm(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    proc = start(
        [
            "--http",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--farm",
            "site1",
            "--state-dir",
            str(tmp_path),
        ]
    )
    procs.append(proc)
    event, seen = wait_started(proc)
    http_url = str(event["http_url"])
    host, port = event["udp"]  # type: ignore[misc]
    # A password by default, made on first start (0600): a datagram without it is dropped.
    password_file = tmp_path / "apmon.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 32
    send_udp((host, port), encode("PoD_Masters", "666", {"NeededWorkers": 9}))
    send_udp((host, port), encode("PoD_Masters", "667", {"NeededWorkers": 9}, password="guess"))
    send_udp((host, port), encode("PoD_Masters", "42", {"NeededWorkers": 3}, password=password))
    url = http_url + "/rest/*/PoD_Masters/*/NeededWorkers"
    for _ in range(100):
        text = get(url)
        if text:
            break
        time.sleep(0.02)
    assert text.startswith("site1/PoD_Masters/42/NeededWorkers/3/")
    assert "666" not in text
    assert "667" not in text
    metrics = get(http_url + "/metrics")
    assert 'podgrid_registry_datagrams_dropped_total{reason="bad_password"} 2.0' in metrics

    token_file = tmp_path / "registry.token"
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    req = urllib.request.Request(
        http_url + "/publish",
        data=b'{"cluster":"c","node":"n","params":{"x":1}}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.load(resp) == {"accepted": 1}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    log = "".join(seen) + (proc.stderr.read() if proc.stderr else "")
    assert "registry.stopped" in log
    assert token not in log


def test_token_from_environment_and_file_no_token_file_written(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("file-token\n\n")
    state = tmp_path / "state"
    proc = start(
        [
            "--http",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--state-dir",
            str(state),
            "--token-file",
            str(tokens),
        ],
        env={"PODGRID_REGISTRY_TOKEN": "env-token"},
    )
    procs.append(proc)
    event, _ = wait_started(proc)
    for token in ("file-token", "env-token"):
        req = urllib.request.Request(
            str(event["http_url"]) + "/publish",
            data=b'{"cluster":"c","node":"n","params":{"x":1}}',
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    assert not (state / "registry.token").exists()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", "nonsense"], "expected HOST:PORT"),
        (["--udp", "127.0.0.1:99999"], "expected HOST:PORT"),
        (["--token-file", "/nonexistent/tokens"], "cannot read"),
        (["--farm", "a/b"], "farm"),
    ],
)
def test_bad_flags_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "podgrid",
            "monitoring",
            "serve",
            "--state-dir",
            str(tmp_path),
            "--http",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_port_in_use_exits_1(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    first = start(["--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--state-dir", str(tmp_path)])
    procs.append(first)
    event, _ = wait_started(first)
    host, port = event["udp"]  # type: ignore[misc]
    second = start(
        ["--http", "127.0.0.1:0", "--udp", f"{host}:{port}", "--state-dir", str(tmp_path)]
    )
    procs.append(second)
    assert second.wait(timeout=20) == 1
    assert second.stderr is not None
    assert "registry.start_failed" in second.stderr.read()


def test_http_address_defaults_to_podregistryurl(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    ldif = tmp_path / "site.ldif"
    ldif.write_text(
        Path(default_ldif())
        .read_text()
        .replace(
            "podRegistryURL: http://127.0.0.1:8885", f"podRegistryURL: http://127.0.0.1:{port}"
        )
    )
    proc = start(["--config", str(ldif), "--udp", "127.0.0.1:0", "--state-dir", str(tmp_path)])
    procs.append(proc)
    event, _ = wait_started(proc)
    assert event["http_url"] == f"http://127.0.0.1:{port}"
    assert json.loads(get(f"http://127.0.0.1:{port}/healthz"))["status"] == "ok"


def test_unreadable_config_exits_1_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "podgrid",
            "monitoring",
            "serve",
            "--config",
            str(tmp_path / "missing.ldif"),
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "missing.ldif" in result.stderr


def test_open_apmon_is_explicit_and_takes_datagrams_without_a_password(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    args = ["--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--state-dir", str(tmp_path)]
    proc = start([*args, "--open-apmon"])
    procs.append(proc)
    event, seen = wait_started(proc)
    assert any('"registry.apmon_open"' in line for line in seen)
    assert not (tmp_path / "apmon.password").exists()
    host, port = event["udp"]  # type: ignore[misc]
    send_udp((host, port), encode("PoD_Masters", "7", {"NeededWorkers": 1}))
    url = str(event["http_url"]) + "/rest/*/PoD_Masters/7/NeededWorkers"
    for _ in range(100):
        if get(url):
            break
        time.sleep(0.02)
    assert get(url).startswith("podgrid/PoD_Masters/7/NeededWorkers/1/")
