"""Polling windows against a real registry: long-poll, plain polling, x, and a registry down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from podgrid.config import retry as retry_module
from podgrid.config.settings import PodSettings
from podgrid.jobagent.poller import ServerPoller
from podgrid.jobagent.slot import SlotFlags, describe_slot
from podgrid.monitoring.client import HttpPublisher, RegistryClient
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.harness.ports import free_port

TOKEN = "poller-test-token-0123456789"
SLOT = describe_slot(
    SlotFlags(cores=1, memory_mb=1024, ttl_s=600),
    agent_id="p",
    site="S",
    ce="c",
    default_ttl_s=600,
    env={},
)


@pytest.fixture
async def registry(tmp_path: object) -> AsyncIterator[str]:
    settings = RegistrySettings(
        http_port=0, udp_port=0, publish_tokens=frozenset({TOKEN}), state_dir=tmp_path
    )  # type: ignore[arg-type]
    async with run_registry(settings) as reg:
        yield reg.http_url


async def publish(url: str, node: str, needed: int) -> None:
    async with HttpPublisher(url, TOKEN) as pub:
        await pub.send(
            "PoD_Masters", node, {"Address": "http://127.0.0.1:9", "NeededWorkers": needed}
        )


async def run_window(
    url: str, pod: PodSettings, *, longpoll: bool | None
) -> tuple[list[str], float, ServerPoller]:
    async with aiohttp.ClientSession() as session:
        poller = ServerPoller(RegistryClient(url, session), session, longpoll=longpoll)
        started = time.monotonic()
        offers = await poller.window(SLOT, lambda: pod, asyncio.Event(), asyncio.Event())
        return [o.request_id for o in offers], time.monotonic() - started, poller


@pytest.mark.parametrize(("longpoll", "bound_s"), [(None, 0.3), (False, 1.3)])
async def test_new_server_found_within_bound(
    registry: str, longpoll: bool | None, bound_s: float
) -> None:
    pod = PodSettings(poll_interval_s=1, poll_duration_s=10)

    async def later() -> float:
        await asyncio.sleep(0.5)
        await publish(registry, "42", 2)
        return time.monotonic()

    publisher = asyncio.create_task(later())
    found, _took, poller = await run_window(registry, pod, longpoll=longpoll)
    latency = time.monotonic() - await publisher
    assert found == ["42"]
    assert latency < bound_s, f"found {latency:.3f}s after the publish"
    assert poller.longpoll is (longpoll is None)


async def test_window_ends_after_x_without_servers(registry: str) -> None:
    pod = PodSettings(poll_interval_s=1, poll_duration_s=2)
    found, took, poller = await run_window(registry, pod, longpoll=None)
    assert found == []
    assert 1.9 <= took < 3.0
    assert poller.queries <= 4, "long-poll: one query per y, not a spin"


async def test_registry_down_backs_off_instead_of_spinning() -> None:
    hits = 0

    async def broken(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    retry_module.set_testing(False)
    try:
        pod = PodSettings(poll_interval_s=1, poll_duration_s=3)
        found, took, _ = await run_window(f"http://127.0.0.1:{port}", pod, longpoll=None)
    finally:
        await runner.cleanup()
    assert found == []
    assert 2.9 <= took < 6
    # Exponential back-off from 0.1 s: a handful of requests in 3 s, not thousands.
    assert 2 <= hits <= 15, f"{hits} requests in {took:.1f}s"
