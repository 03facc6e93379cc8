"""The user commands (submit, info, ls, cancel, jobs) against a real master queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from podgrid.cli import main
from podgrid.endpoints import LocalGridEndpoints
from podgrid.masterqueue.client import MasterQueueClient
from tests.masterqueue.factories import request_text
from tests.podgrid.mq_service import RunningGrid, grid, running_grid, signing_broker, workers

__all__ = ["grid"]  # the fixture, imported so pytest finds it here


class Cli:
    """Runs ``podgrid ...`` in a thread (it has its own event loop) and captures its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()  # drop what the service logged before
        code = await asyncio.to_thread(main, list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
async def alice(
    grid: RunningGrid, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> MasterQueueClient:
    """Alice's client; her URL and token are in PODGRID_URL / PODGRID_TOKEN for the CLI."""
    token = await grid.token("user", "alice")
    monkeypatch.setenv("PODGRID_URL", grid.url)
    monkeypatch.setenv("PODGRID_TOKEN", token)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("COLUMNS", "200")
    return await grid.client(token)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """The CLI runner; afterwards logging is reset, since ``main`` bound it to captured stderr."""
    yield Cli(capsys)
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.toml"
    path.write_text(request_text(name="dimuon-scan", min_workers=2, max_workers=3))
    return path


async def test_submit_ls_info_cancel(
    grid: RunningGrid, alice: MasterQueueClient, cli: Cli, request_file: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await _submit_ls_info_cancel(grid, cli, request_file, stack)


async def _submit_ls_info_cancel(
    grid: RunningGrid, cli: Cli, request_file: Path, stack: contextlib.AsyncExitStack
) -> None:
    code, out, _ = await cli("submit", str(request_file))
    assert (code, out) == (0, "request 1 submitted (WAITING)\n")

    code, out, _ = await cli("ls")
    assert code == 0
    assert "dimuon-scan" in out
    assert "WAITING" in out
    assert "0 (min 2, max 3)" in out

    code, _, err = await cli("info", "1", "-c")
    assert code == 1
    assert err == "podgrid: error: request 1 has no connection info yet (state WAITING)\n"

    broker = await grid.broker(1)
    signer = await stack.enter_async_context(signing_broker(grid, 1))
    await broker.report_state(
        1,
        "READY",
        workers=workers(2),
        address="tls://127.0.0.1:8786",
        connection=signer.connection("tls://127.0.0.1:8786"),
    )
    code, out, _ = await cli("info", "1", "-s")
    assert (code, out) == (0, "READY\n")
    code, out, _ = await cli("info", "-n")  # no id: the latest active request
    assert (code, out) == (0, "2\n")
    code, out, _ = await cli("info", "1", "-l")
    assert code == 0
    assert "wn001.example.org" in out
    assert "CERN" in out
    assert "0.50 s" in out
    code, out, _ = await cli("info", "1", "-c")
    assert code == 0
    assert 'client = Client("tls://127.0.0.1:8786", security=security)' in out
    assert "PRIVATE KEY" not in out  # the snippet names the owner's 0600 key file instead
    assert "request-1.key" in out
    code, out, _ = await cli("info", "1", "-c", "--json")
    shown = json.loads(out)["connection"]
    assert "tls_client_key" not in shown
    assert "PRIVATE KEY" not in out
    key_text = await asyncio.to_thread(Path(shown["tls_client_key_file"]).read_text)
    assert key_text.startswith("-----BEGIN PRIVATE KEY")
    code, out, _ = await cli("info", "1", "-s", "-n", "--json")
    assert json.loads(out) == {
        "id": 1,
        "state": "READY",
        "reason": "reported by the broker",
        "worker_count": 2,
    }
    code, out, _ = await cli("info", "1")
    assert code == 0
    assert "tls://127.0.0.1:8786" in out
    assert "PUBLISHING" in out  # the timeline

    code, out, _ = await cli("cancel", "1")
    assert (code, out) == (0, "request 1 CANCELLED\n")
    code, out, _ = await cli("ls", "--json")
    assert json.loads(out) == []
    code, out, _ = await cli("ls", "--all", "--json")
    assert [(r["id"], r["state"]) for r in json.loads(out)] == [(1, "CANCELLED")]
    code, _, err = await cli("cancel", "1")
    assert code == 1
    assert err == (
        "podgrid: error: request 1 is CANCELLED; cannot move to CANCELLED (409 illegal_transition)"
        " [state: is CANCELLED; cannot move to CANCELLED]\n"
    )
    code, _, err = await cli("info")
    assert code == 1
    assert "you have no active request" in err


async def test_submit_wait_ends_with_the_connection_snippet(
    grid: RunningGrid, alice: MasterQueueClient, cli: Cli, request_file: Path
) -> None:
    async def broker_side() -> None:
        while not [r async for r in alice.list_requests()]:  # noqa: ASYNC110 - the CLI submits
            await asyncio.sleep(0.05)
        broker = await grid.broker(1)
        await broker.report_state(1, "PUBLISHING", address="tls://127.0.0.1:8786")
        await asyncio.sleep(0.3)
        await broker.report_state(1, "PUBLISHING", workers=workers(1))
        await asyncio.sleep(0.3)
        signer = await stack.enter_async_context(signing_broker(grid, 1))
        await broker.report_state(
            1,
            "READY",
            workers=workers(2),
            address="tls://127.0.0.1:8786",
            connection=signer.connection("tls://127.0.0.1:8786"),
        )

    async with contextlib.AsyncExitStack() as stack:
        broker_task = asyncio.create_task(broker_side())
        code, out, err = await cli("submit", str(request_file), "--wait", "--poll", "0.1")
        await broker_task
    assert code == 0, err
    assert out.startswith("request 1 is READY: 2 (min 2, max 3)\n")
    assert 'client = Client("tls://127.0.0.1:8786", security=security)' in out
    assert "request 1 submitted, waiting for workers" in err
    assert "2/2/3 workers (n/min/max)" in err  # the progress bar's last state


async def test_submit_wait_reports_a_final_state_and_exits_1(
    grid: RunningGrid, alice: MasterQueueClient, cli: Cli, request_file: Path
) -> None:
    async def cancel_soon() -> None:
        while not [r async for r in alice.list_requests()]:  # noqa: ASYNC110 - the CLI submits
            await asyncio.sleep(0.05)
        await alice.cancel_request(1)

    task = asyncio.create_task(cancel_soon())
    code, _, err = await cli("submit", str(request_file), "--wait", "--poll", "0.1")
    await task
    assert code == 1
    assert err.endswith("podgrid: error: request 1 is CANCELLED: cancelled by the owner\n")

    code, _, err = await cli(
        "submit", str(request_file), "--wait", "--timeout", "0.3", "--poll", "0.1"
    )
    assert code == 1
    assert err.endswith("podgrid: error: request 2 still WAITING after 0.3 s (0/2 workers)\n")


async def test_wrong_token_is_one_clear_line_and_exit_1(
    alice: MasterQueueClient, cli: Cli, request_file: Path
) -> None:
    code, out, err = await cli("submit", str(request_file), "--token", "pgt_wrong")
    assert (code, out) == (1, "")
    assert err == "podgrid: error: invalid token (401 unauthorized)\n"


async def test_bad_request_file_names_line_and_field_exit_2(
    alice: MasterQueueClient, cli: Cli, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nname = "x"\nmin_workers = 4\nmax_workers = 2\n')
    code, out, err = await cli("submit", str(bad))
    assert (code, out) == (2, "")
    assert err == f"{bad}:4: server.max_workers: must be >= min_workers (4), got 2\n"
    assert [r async for r in alice.list_requests()] == []  # nothing was sent
    code, _, err = await cli("submit", str(tmp_path / "missing.toml"))
    assert code == 2
    assert err == f"{tmp_path / 'missing.toml'}: no such file\n"


async def test_other_users_requests_are_not_found(
    grid: RunningGrid, alice: MasterQueueClient, cli: Cli, request_file: Path
) -> None:
    await alice.submit_request(request_text(), "toml")
    bob = await grid.token("user", "bob")
    code, _, err = await cli("info", "1", "--token", bob)
    assert code == 1
    assert err == "podgrid: error: request 1 not found (404 not_found)\n"
    code, out, _ = await cli("ls", "--token", bob)
    assert (code, out) == (0, "no active requests\n")


async def test_jobs_submit_ls_show(alice: MasterQueueClient, cli: Cli) -> None:
    code, out, _ = await cli(
        "jobs",
        "submit",
        "--cores",
        "2",
        "--memory",
        "2GiB",
        "--ttl",
        "10m",
        "--priority",
        "7",
        "--env",
        "A=1",
        "B=x=y",
        "--",
        "python",
        "-c",
        "print(1)",
    )
    assert (code, out) == (0, "job 1 submitted (WAITING)\n")
    record = await alice.get_job(1)
    assert record.spec.command == ["python", "-c", "print(1)"]
    assert record.spec.env == {"A": "1", "B": "x=y"}
    assert (record.spec.cores, record.spec.memory_mb, record.spec.ttl_s) == (2, 2048, 600)
    assert record.spec.priority == 7

    code, out, _ = await cli("jobs", "ls")
    assert code == 0
    assert "python -c print(1)" in out
    assert "WAITING" in out
    code, out, _ = await cli("jobs", "ls", "--json")
    assert [j["id"] for j in json.loads(out)] == [1]
    code, out, _ = await cli("jobs", "show", "1")
    assert code == 0
    assert "2 cores, 2048 MiB, ttl 600 s" in out
    assert "A=1 B=x=y" in out

    code, _, err = await cli("jobs", "submit", "--priority", "5000", "--", "true")
    assert code == 2
    assert err == "podgrid: error: priority: Input should be less than or equal to 1000\n"
    code, _, err = await cli("jobs", "submit", "--env", "NOVALUE", "--", "true")
    assert code == 2
    assert err == "podgrid: error: --env: expected K=V, got 'NOVALUE'\n"
    code, out, _ = await cli("jobs", "kill", "1")
    assert (code, out) == (0, "job 1 KILLED\n")
    code, _, err = await cli("jobs", "show", "99")
    assert code == 1
    assert err == "podgrid: error: job 99 not found (404 not_found)\n"


async def test_endpoints_file_of_podgrid_up_is_found_without_flags(
    grid: RunningGrid,
    alice: MasterQueueClient,
    cli: Cli,
    request_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("PODGRID_URL")
    monkeypatch.delenv("PODGRID_TOKEN")
    token = await grid.token("user", "dora")
    LocalGridEndpoints(masterqueue_url=grid.url, user_token=token).write(
        tmp_path / "xdg-state" / "podgrid" / "endpoints.json"
    )
    code, out, _ = await cli("submit", str(request_file), "--json")
    assert code == 0
    assert json.loads(out)["owner"] == "dora"


async def test_the_services_cap_is_reported_against_the_file(
    tmp_path: Path, cli: Cli, request_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_grid(tmp_path / "capped", max_workers_cap=2) as capped:
        monkeypatch.setenv("PODGRID_URL", capped.url)
        monkeypatch.setenv("PODGRID_TOKEN", await capped.token("user", "alice"))
        code, out, err = await cli("submit", str(request_file))
    assert (code, out) == (2, "")
    assert err == (
        f"{request_file}:4: server.max_workers: must be <= the operator's cap of 2 workers, got 3\n"
    )
