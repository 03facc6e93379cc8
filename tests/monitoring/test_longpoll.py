"""Long-poll: a waiting query is answered as soon as a matching datagram arrives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.monitoring.registry_helpers import sample, send_udp, until_received
from tests.monitoring.xdr_encoder import encode

AGENT_QUERY = "/rest/*/PoD_Masters/*/-60000/-1/NeededWorkers/1:"


@pytest.fixture
async def registry(tmp_path) -> AsyncIterator[RunningRegistry]:  # type: ignore[no-untyped-def]
    settings = RegistrySettings(http_port=0, udp_port=0, max_wait_s=20, state_dir=tmp_path)
    async with run_registry(settings) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def waiters(registry: RunningRegistry, count: int) -> None:
    for _ in range(500):
        if sample(registry.app, "podgrid_registry_longpoll_waiters") == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {count} long-poll waiters")


async def timed_get(http: aiohttp.ClientSession, url: str) -> tuple[float, int, str]:
    started = time.monotonic()
    async with http.get(url) as resp:
        text = await resp.text()
        return time.monotonic() - started, resp.status, text


async def test_agent_learns_of_a_new_server_in_one_round_trip(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    poll = asyncio.create_task(timed_get(http, registry.http_url + AGENT_QUERY + "?wait=15"))
    await waiters(registry, 1)
    assert sample(registry.app, "podgrid_registry_longpoll_waiters") == 1
    sent = time.monotonic()
    send_udp(registry.udp_addr, encode("PoD_Masters", "42", {"NeededWorkers": 3}))
    elapsed_s, status, text = await asyncio.wait_for(poll, 5)
    assert status == 200
    assert text.startswith("podgrid/PoD_Masters/42/NeededWorkers/3/")
    assert time.monotonic() - sent < 1.0  # woken by the datagram, not by the 15 s wait
    assert elapsed_s < 5
    await waiters(registry, 0)


async def test_updates_that_do_not_match_do_not_wake(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    url = registry.http_url + AGENT_QUERY + "?wait=0.6"
    poll = asyncio.create_task(timed_get(http, url))
    await waiters(registry, 1)
    send_udp(
        registry.udp_addr,
        encode("PoD_Masters", "42", {"NeededWorkers": 0}, seq=1),  # fails the condition
        encode("PoD_Masters", "42", {"Address": "x"}, seq=2),  # another parameter
        encode("Other", "42", {"NeededWorkers": 4}, seq=3),  # another cluster
    )
    await until_received(registry.app, 3)
    elapsed_s, status, text = await poll
    assert (status, text) == (200, "")  # the current (empty) answer when the wait ends
    assert elapsed_s >= 0.55


async def test_since_answers_at_once_when_something_newer_exists(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    send_udp(registry.udp_addr, encode("PoD_Masters", "42", {"NeededWorkers": 2}))
    await until_received(registry.app, 1)
    elapsed_s, _, text = await timed_get(http, registry.http_url + AGENT_QUERY + "?wait=10&since=0")
    assert elapsed_s < 2
    assert "/42/NeededWorkers/2/" in text
    # nothing newer than now: the poll waits for the next update
    async with http.get(registry.http_url + "/healthz") as resp:
        now_ms = int(resp.headers.get("X-Registry-Now-Ms", "0")) or int(time.time() * 1000)
    url = registry.http_url + AGENT_QUERY + f"?wait=10&since={now_ms + 1000}"
    poll = asyncio.create_task(timed_get(http, url))
    await waiters(registry, 1)
    send_udp(registry.udp_addr, encode("PoD_Masters", "43", {"NeededWorkers": 1}, seq=2))
    elapsed_s, _, text = await asyncio.wait_for(poll, 5)
    assert elapsed_s < 5
    assert "/43/NeededWorkers/1/" in text


async def test_many_waiters_on_different_clusters_are_woken_selectively(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    base = registry.http_url + "/rest/*/{}/*/State?wait=10"
    polls = {
        c: asyncio.create_task(timed_get(http, base.format(c)))
        for c in ("PoD_Agents_A", "PoD_Agents_B", "PoD_Agents_*")
    }
    await waiters(registry, 3)
    send_udp(registry.udp_addr, encode("PoD_Agents_A", "a1", {"State": "POLLING"}))
    done, pending = await asyncio.wait(polls.values(), timeout=1)
    assert {polls["PoD_Agents_A"], polls["PoD_Agents_*"]} == done
    assert pending == {polls["PoD_Agents_B"]}
    assert sample(registry.app, "podgrid_registry_longpoll_waiters") == 1
    polls["PoD_Agents_B"].cancel()


async def test_shutdown_answers_parked_long_polls_at_once(
    tmp_path,  # type: ignore[no-untyped-def]
    http: aiohttp.ClientSession,
) -> None:
    settings = RegistrySettings(http_port=0, udp_port=0, max_wait_s=30, state_dir=tmp_path)
    async with run_registry(settings) as reg:
        poll = asyncio.create_task(timed_get(http, reg.http_url + AGENT_QUERY + "?wait=30"))
        await waiters(reg, 1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2  # not held for the 30 s wait nor a 5 s timeout
    _, status, text = await poll
    assert (status, text) == (200, "")
