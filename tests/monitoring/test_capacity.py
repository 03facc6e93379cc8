"""Capacity is configuration and overload is graceful: caps, 503 + Retry-After, /healthz alive.

Real registries on 127.0.0.1: in-process for the caps, ``podgrid monitoring serve`` as a
process for the flags, the LDAP attributes (LDIF) and the raised descriptor limit.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from podgrid.config import default_ldif
from podgrid.config.settings import PodSettings
from podgrid.errors import ServiceUnavailable
from podgrid.jobagent.poller import ServerPoller
from podgrid.jobagent.slot import SlotFlags, describe_slot
from podgrid.monitoring.client import RegistryClient, backoff_s, retry_after_s
from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.monitoring.registry_helpers import sample
from tests.monitoring.test_cli_monitoring import get, procs, start, wait_started
from tests.monitoring.test_longpoll import waiters

__all__ = ["procs"]  # the fixture, shared with the CLI tests

QUERY = "/rest/*/PoD_Masters/*/NeededWorkers/1:"
SERVE = [sys.executable, "-m", "podgrid", "monitoring", "serve"]
SLOT = describe_slot(
    SlotFlags(cores=1, memory_mb=1024, ttl_s=600),
    agent_id="a",
    site="S",
    ce="c",
    default_ttl_s=600,
    env={},
)


@pytest.fixture
async def small(tmp_path) -> AsyncIterator[RunningRegistry]:  # type: ignore[no-untyped-def]
    settings = RegistrySettings(
        http_port=0, udp_port=0, max_waiters=3, retry_after_s=7, state_dir=tmp_path
    )
    async with run_registry(settings) as running:
        yield running


async def test_past_the_waiter_cap_a_long_poll_gets_503_retry_after_and_healthz_answers(
    small: RunningRegistry,
) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{small.http_url}{QUERY}?wait=10"
        parked = [asyncio.create_task(http.get(url)) for _ in range(3)]
        await waiters(small, 3)
        async with http.get(url) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "7"
            assert resp.headers["Connection"] == "close"  # the descriptor is freed at once
            assert (await resp.json())["error"] == "too_many_waiters"
        async with http.get(small.http_url + "/healthz") as resp:
            doc = await resp.json()
        assert (doc["status"], doc["waiters"], doc["max_waiters"]) == ("ok", 3, 3)
        async with http.get(small.http_url + QUERY) as resp:  # plain queries still answered
            assert resp.status == 200
        assert sample(small.app, "podgrid_registry_longpolls_refused_total") == 1
        for task in parked:
            task.cancel()


async def test_a_client_told_to_retry_later_backs_off_with_jitter(
    small: RunningRegistry,
) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{small.http_url}{QUERY}?wait=10"
        parked = [asyncio.create_task(http.get(url)) for _ in range(3)]
        await waiters(small, 3)
        async with RegistryClient(small.http_url, http) as client:
            with pytest.raises(ServiceUnavailable) as refused:
                await client.query(QUERY, wait_s=5, since_ms=0)
            assert retry_after_s(refused.value) == 7
            # Asked again at once, the client does not knock: the registry sees no new 503.
            with pytest.raises(ServiceUnavailable) as again:
                await client.query(QUERY, wait_s=5, since_ms=0)
            assert 0 < (retry_after_s(again.value) or 0) <= 7 * 1.5
        assert sample(small.app, "podgrid_registry_longpolls_refused_total") == 1
        delays = {backoff_s(refused.value, random.Random(seed)) for seed in range(50)}
        assert all(7 * 0.5 <= d < 7 * 1.5 for d in delays if d is not None)
        assert len(delays) == 50  # fifty agents come back at fifty different moments
        for task in parked:
            task.cancel()


async def raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 5)  # read to EOF: the registry closes
    writer.close()
    await writer.wait_closed()
    return answer


async def test_past_the_fd_budget_healthz_still_answers_and_the_rest_is_refused(
    tmp_path: Path,
) -> None:
    settings = RegistrySettings(http_port=0, udp_port=0, fd_budget=4, state_dir=tmp_path)
    async with run_registry(settings) as reg:
        port = int(reg.http_url.rsplit(":", 1)[1])
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        try:
            await _over_budget(reg, port)
        finally:
            for _, writer in held:
                writer.close()
                await writer.wait_closed()


async def _over_budget(reg: RunningRegistry, port: int) -> None:
    """Four connections held: /healthz is answered, a query refused, both closed."""
    for _ in range(100):  # the registry has taken all four
        if sample(reg.app, "podgrid_registry_connections") == 4:
            break
        await asyncio.sleep(0.01)
    health = await raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = health.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    doc = json.loads(body)
    assert (doc["status"], doc["connections"], doc["fd_budget"]) == ("overloaded", 4, 4)
    refused = await raw_request(port, b"GET " + QUERY.encode() + b" HTTP/1.1\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"Retry-After: 5\r\n" in refused
    assert sample(reg.app, "podgrid_registry_connections_over_budget_total") == 2


def _low_fd_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_serve_raises_its_fd_limit_and_takes_caps_from_flags_and_ldap(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ldif = tmp_path / "c.ldif"
    ldif.write_text(
        Path(default_ldif())
        .read_text()
        .replace(
            "podConfigRefresh: 60\n",
            "podConfigRefresh: 60\npodRegistryMaxWaiters: 7\npodRegistryMaxWait: 9\n",
        )
    )
    common = ["--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--config", str(ldif)]
    proc = subprocess.Popen(
        [*SERVE, *common, "--state-dir", str(tmp_path / "a")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_fd_limit,  # no threads in this test: safe
    )
    procs.append(proc)
    started, seen = wait_started(proc)
    [capacity] = [json.loads(line) for line in seen if '"registry.capacity"' in line]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert capacity["fd_soft_limit_before"] == 256
    assert capacity["fd_soft_limit"] == hard
    doc = json.loads(get(str(started["http_url"]) + "/healthz"))
    assert (doc["max_waiters"], doc["max_wait_s"]) == (7, 9)  # from the LDAP attributes
    assert doc["fd_budget"] == hard - 256
    flags = ["--max-waiters", "5", "--fd-budget", "100", "--max-wait", "3"]
    flagged = start([*common, *flags, "--state-dir", str(tmp_path / "b")])
    procs.append(flagged)
    started, _ = wait_started(flagged)
    doc = json.loads(get(str(started["http_url"]) + "/healthz"))
    assert (doc["max_waiters"], doc["fd_budget"], doc["max_wait_s"]) == (5, 100, 3)


async def test_a_waiter_whose_client_left_frees_its_place_under_the_cap(tmp_path: Path) -> None:
    settings = RegistrySettings(http_port=0, udp_port=0, max_waiters=1, state_dir=tmp_path)
    async with run_registry(settings) as reg:
        port = int(reg.http_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {QUERY}?wait=30 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await waiters(reg, 1)
        writer.close()  # the agent went away; aiohttp does not cancel its handler
        await writer.wait_closed()
        async with aiohttp.ClientSession() as http:
            poll = asyncio.create_task(http.get(f"{reg.http_url}{QUERY}?wait=0.5"))
            async with await poll as resp:
                assert resp.status == 200  # parked in the dead waiter's place, not refused
        assert sample(reg.app, "podgrid_registry_longpolls_refused_total") == 0
        del reader


async def test_an_agent_turned_away_waits_for_retry_after_before_asking_again(
    tmp_path: Path,
) -> None:
    settings = RegistrySettings(
        http_port=0, udp_port=0, max_waiters=1, retry_after_s=2, state_dir=tmp_path
    )
    async with run_registry(settings) as reg, aiohttp.ClientSession() as http:
        holder = asyncio.create_task(http.get(f"{reg.http_url}{QUERY}?wait=20"))
        await waiters(reg, 1)
        pod = PodSettings(poll_interval_s=1, poll_duration_s=3)
        poller = ServerPoller(RegistryClient(reg.http_url, http), http, longpoll=True)
        offers = await poller.window(SLOT, lambda: pod, asyncio.Event(), asyncio.Event())
        holder.cancel()
    assert offers == []
    # Three seconds of window, told to stay away 2 s (x 0.5-1.5) each time: one or two
    # refusals, where the plain retry back-off (from 0.1 s) would have knocked many times.
    assert 1 <= sample(reg.app, "podgrid_registry_longpolls_refused_total") <= 2
    assert poller.queries <= 6, f"{poller.queries} rounds in 3 s: the agent did not wait"
