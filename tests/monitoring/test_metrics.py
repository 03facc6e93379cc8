"""``GET /metrics``: valid Prometheus text (promtool), counters that move, bounded servers."""

from __future__ import annotations

import asyncio
import shutil
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.monitoring.registry_helpers import TOKEN, send_udp, until_received
from tests.monitoring.xdr_encoder import encode


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's 'prometheus' package (apt-get install)")
    return path


@pytest.fixture
async def registry(tmp_path) -> AsyncIterator[RunningRegistry]:  # type: ignore[no-untyped-def]
    settings = RegistrySettings(
        http_port=0,
        udp_port=0,
        publish_tokens=frozenset({TOKEN}),
        max_series=6,
        max_metric_servers=3,
        state_dir=tmp_path,
    )
    async with run_registry(settings) as running:
        yield running


async def scrape(registry: RunningRegistry) -> str:
    async with aiohttp.ClientSession() as http, http.get(registry.http_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        return await resp.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def exercise(registry: RunningRegistry) -> None:
    """Datagrams (good and bad), publishes (good and bad), queries in two formats."""
    datagrams = [
        encode("PoD_Masters", f"r{i}", {"NeededWorkers": i, "Workers": 10 + i}, seq=i + 1)
        for i in range(5)
    ]  # 10 series wanted, max_series=6: 4 refused
    send_udp(registry.udp_addr, *datagrams, b"junk")
    await until_received(registry.app, 6)
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for headers in (auth, {}):
            await (
                await http.post(registry.http_url + "/publish", data=b"{", headers=headers)
            ).read()
        for accept in ("text/plain", "application/json", "application/json"):
            url = registry.http_url + "/rest/*/PoD_Masters/*/NeededWorkers"
            await (await http.get(url, headers={"Accept": accept})).read()


async def test_metrics_pass_promtool(registry: RunningRegistry, promtool: str) -> None:
    await exercise(registry)
    text = await scrape(registry)
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(text.encode()), 30)
    assert proc.returncode == 0, output.decode()


async def test_metrics_count_what_happened(registry: RunningRegistry) -> None:
    await exercise(registry)
    got = samples(await scrape(registry))
    assert got[("podgrid_registry_datagrams_received_total", ())] == 6
    assert got[("podgrid_registry_datagrams_dropped_total", (("reason", "truncated"),))] == 1
    assert got[("podgrid_registry_publishes_received_total", ())] == 2
    for reason in ("invalid", "unauthorized"):
        assert got[("podgrid_registry_publishes_rejected_total", (("reason", reason),))] == 1
    assert got[("podgrid_registry_series", ())] == 6
    assert got[("podgrid_registry_series_refused_total", ())] == 4
    assert got[("podgrid_registry_queries_total", (("format", "application/json"),))] == 2
    assert got[("podgrid_registry_queries_total", (("format", "text/plain"),))] == 1
    assert got[("podgrid_registry_query_duration_seconds_count", ())] == 3
    assert got[("podgrid_registry_longpoll_waiters", ())] == 0


async def test_per_server_gauges_are_capped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = RegistrySettings(http_port=0, udp_port=0, max_metric_servers=3, state_dir=tmp_path)
    async with run_registry(settings) as registry:
        send_udp(
            registry.udp_addr,
            *[
                encode("PoD_Masters", f"r{i}", {"NeededWorkers": i, "Workers": 10 + i}, seq=i + 1)
                for i in range(5)
            ],
            encode("PoD_Masters", "r9", {"Address": "http://h:1"}, seq=20),  # no gauges
        )
        await until_received(registry.app, 6)
        got = samples(await scrape(registry))
    needed = {
        dict(labels)["server"]: v
        for (name, labels), v in got.items()
        if name == "podgrid_registry_server_needed_workers"
    }
    workers = {
        dict(labels)["server"]: v
        for (name, labels), v in got.items()
        if name == "podgrid_registry_server_workers"
    }
    assert len(needed) == 3
    assert all(workers[server] == value + 10 for server, value in needed.items())
    assert set(workers) == set(needed)
    assert {server: int(server[1:]) for server in needed} == needed
    assert got[("podgrid_registry_servers_omitted", ())] == 2
