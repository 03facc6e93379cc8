"""``podgrid broker serve`` as a real process: start, attach a real worker, SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import psutil

from podgrid.protocol import RequestState
from tests.broker.grid import Grid, env_without_tokens, slot, until


async def _serve(grid: Grid, request_id: int, token: str | None) -> asyncio.subprocess.Process:
    env = env_without_tokens()
    if token is not None:
        env["PODGRID_TOKEN"] = token
        env["PODGRID_SIGN_SECRET"] = grid.sign_secret(request_id)  # as the launcher does
    argv = [
        sys.executable,
        "-m",
        "podgrid",
        "broker",
        "serve",
        "--request-id",
        str(request_id),
        "--masterqueue",
        grid.mq.url,
        "--registry",
        grid.udp,
        "--http",
        "127.0.0.1:0",
        "--state-dir",
        str(grid.tmp / "state"),
        "--publish-interval",
        "0.2",
    ]
    log = (grid.tmp / f"broker-{request_id}.log").open("wb")
    try:
        return await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=log)
    finally:
        log.close()


async def test_serve_publishes_serves_and_stops_cleanly_on_sigterm(grid: Grid) -> None:
    request_id, token = await grid.submit()
    started = time.monotonic()
    proc = await _serve(grid, request_id, token)
    try:

        async def address() -> bool:
            return await grid.registry_value(request_id, "Address") is not None

        await until(address, True, 20)
        first_publish_s = time.monotonic() - started
        print(f"process start -> first publish: {first_publish_s:.3f} s")
        url = str(await grid.registry_value(request_id, "Address"))
        assert url.startswith("https://")
        status, grant = await grid.attach(url, slot("a1", site="S1"), grid.ticket(request_id))
        assert status == 200
        worker = grid.start_worker(grant)
        await until(lambda: _workers(grid, request_id), 1, 30)
        assert psutil.Process(proc.pid).children(recursive=True) == []  # scheduler in-process
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # The worker was retired gracefully, not left behind.
    assert await asyncio.wait_for(asyncio.to_thread(worker.wait), 15) == 0
    assert not psutil.pid_exists(proc.pid)
    assert await grid.registry_value(request_id, "NeededWorkers") == 0
    assert await grid.registry_value(request_id, "State") == "DONE"
    record = await grid.request(request_id)
    assert (record.state, record.worker_count) == (RequestState.DONE, 0)


async def _workers(grid: Grid, request_id: int) -> int:
    return (await grid.request(request_id)).worker_count


async def test_serve_without_a_token_is_a_usage_error(grid: Grid) -> None:
    proc = await _serve(grid, 1, None)
    assert await asyncio.wait_for(proc.wait(), 30) == 2


async def test_serve_for_a_final_request_fails(grid: Grid) -> None:
    request_id, token = await grid.submit()
    await grid.mq.store.transition(request_id, RequestState.CANCELLED, "test")
    proc = await _serve(grid, request_id, token)
    assert await asyncio.wait_for(proc.wait(), 30) == 1
    log = (grid.tmp / f"broker-{request_id}.log").read_text()
    assert "already CANCELLED" in log
