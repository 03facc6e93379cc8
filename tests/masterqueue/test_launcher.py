"""The local launcher with a real (fake) broker process reporting through the real API."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from podgrid.masterqueue import keys
from podgrid.masterqueue.launcher import LaunchHandle
from tests.masterqueue.api_helpers import Api, Service, mq_service

FAKE_BROKER = str(Path(__file__).with_name("fake_broker.py"))


def launcher_settings(*flags: str, **overrides: Any) -> dict[str, Any]:
    """Service settings with the local launcher running the fake broker."""
    values: dict[str, Any] = {
        "launcher": "local",
        "broker_command": [sys.executable, FAKE_BROKER, *flags],
        "launcher_interval_s": 0.1,
        "sweep_interval_s": 0.1,
        "broker_stop_grace_s": 0.5,
        "broker_heartbeat_timeout_s": 30.0,
        "stop_brokers_on_exit": True,
    }
    values.update(overrides)
    return values


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Wait until ``check()`` is true (fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def state_of(api: Api, request_id: int) -> str:
    """The request's current state, as its owner sees it."""
    return str((await api.call("GET", f"/v1/requests/{request_id}")).body["state"])


async def wait_state(api: Api, request_id: int, *states: str, timeout_s: float = 15.0) -> None:
    """Wait until the request is in one of ``states``."""

    async def check() -> bool:
        return await state_of(api, request_id) in states

    await eventually(check, timeout_s)


async def handle_of(svc: Service, request_id: int) -> LaunchHandle:
    """The launcher's handle of the broker started for ``request_id``."""
    handles = svc.running.app[keys.LAUNCH_LOOP].handles

    async def check() -> bool:
        return request_id in handles

    await eventually(check)
    return handles[request_id]


async def gone(pid: int, timeout_s: float = 15.0) -> None:
    """Wait until ``pid`` no longer runs (zombies count as gone)."""

    async def check() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await eventually(check, timeout_s)


def log_text(svc: Service, request_id: int) -> str:
    """The broker's log file."""
    return (svc.settings.broker_log_dir / f"{request_id}.log").read_text()


async def test_submit_starts_a_broker_that_reaches_full(tmp_path: Path) -> None:
    async with mq_service(tmp_path, **launcher_settings()) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FULL")
        body = (await alice.call("GET", f"/v1/requests/{rid}")).body
        states = [e["state"] for e in body["timeline"]]
        assert states == ["WAITING", "STARTING", "PUBLISHING", "READY", "FULL"]
        assert body["worker_count"] == 2
        assert [w["host"] for w in body["workers"]] == ["wn001", "wn002"]
        assert body["master_host"]
        assert body["last_heartbeat"] is not None
        conn = (await alice.call("GET", f"/v1/requests/{rid}/connection")).body
        assert conn["connection"]["address"] == "tls://127.0.0.1:8786"
        assert "registry http://127.0.0.1:9" in log_text(svc, rid)
        metrics = (await alice.call("GET", "/metrics")).body
        assert "podgrid_masterqueue_launcher_starts_total 1.0" in metrics
        assert 'podgrid_masterqueue_requests{state="FULL"} 1.0' in metrics


async def test_cancel_makes_the_broker_stop(tmp_path: Path) -> None:
    async with mq_service(tmp_path, **launcher_settings()) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FULL")
        pid = (await handle_of(svc, rid)).pid
        assert (await alice.call("DELETE", f"/v1/requests/{rid}")).status == 200
        await gone(pid)
        assert "stopping: request is CANCELLED" in log_text(svc, rid)
        assert await state_of(alice, rid) == "CANCELLED"


async def test_sigkilled_broker_fails_the_request_and_leaves_nothing(tmp_path: Path) -> None:
    async with mq_service(tmp_path, **launcher_settings("--spawn-child")) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FULL")
        handle = await handle_of(svc, rid)
        child = int(re.findall(r"child pid (\d+)", log_text(svc, rid))[0])
        assert psutil.pid_exists(child)
        psutil.Process(handle.pid).kill()
        await wait_state(alice, rid, "FAILED")
        body = (await alice.call("GET", f"/v1/requests/{rid}")).body
        assert re.match(r"broker exited while (READY|FULL): killed by SIGKILL", body["reason"])
        await gone(child, timeout_s=5)


async def test_broker_exiting_early_fails_with_exit_code_and_log(tmp_path: Path) -> None:
    settings = launcher_settings("--exit-after-publishing", "3")
    async with mq_service(tmp_path, **settings) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FAILED")
        reason = (await alice.call("GET", f"/v1/requests/{rid}")).body["reason"]
        assert reason.startswith("broker exited while PUBLISHING: exit code 3")
        assert "exiting early on purpose" in reason


async def test_lost_heartbeat_fails_the_request_and_kills_the_broker(tmp_path: Path) -> None:
    settings = launcher_settings("--hang-after-full", broker_heartbeat_timeout_s=1.0)
    async with mq_service(tmp_path, **settings) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FULL")
        pid = (await handle_of(svc, rid)).pid
        await wait_state(alice, rid, "FAILED")
        reason = (await alice.call("GET", f"/v1/requests/{rid}")).body["reason"]
        assert reason == "broker heartbeat lost for 1 s"
        await gone(pid)
        assert "hanging without heartbeats" in log_text(svc, rid)


async def test_broker_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    async with mq_service(
        tmp_path, **launcher_settings("--ignore-sigterm", "--hang-after-full")
    ) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FULL")
        pid = (await handle_of(svc, rid)).pid
        await alice.call("DELETE", f"/v1/requests/{rid}")
        await gone(pid, timeout_s=20)
        assert rid not in svc.running.app[keys.LAUNCH_LOOP].handles


async def test_unstartable_broker_command_fails_the_request(tmp_path: Path) -> None:
    settings = launcher_settings(broker_command=[str(tmp_path / "no-such-broker")])
    async with mq_service(tmp_path, **settings) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FAILED")
        reason = (await alice.call("GET", f"/v1/requests/{rid}")).body["reason"]
        assert reason.startswith("broker could not start on ")
        assert "no-such-broker" in reason


async def test_two_master_queues_launch_each_request_once(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first = mq_service(tmp_path / "a", db_url=db_url, **launcher_settings())
    async with first as a:
        alice = await a.user("alice")
        async with mq_service(tmp_path / "b", db_url=db_url, **launcher_settings()) as b:
            ids = [(await alice.submit(name=f"r{i}")).body["id"] for i in range(6)]
            for rid in ids:
                await wait_state(alice, rid, "FULL")
            launched = set(a.running.app[keys.LAUNCH_LOOP].handles)
            launched_b = set(b.running.app[keys.LAUNCH_LOOP].handles)
            assert launched | launched_b == set(ids)
            assert not launched & launched_b
            for rid in ids:
                events = await a.store.request_events(rid)
                assert [e.state for e in events].count("STARTING") == 1
