"""Many registries: publishers reach all, agents spread and fail over, no new server is missed.

Three ``podgrid monitoring serve`` processes on 127.0.0.1; the broker's own publication code
(``Publication`` over ``open_publisher`` of the list) and the agents' own polling windows
(``ServerPoller`` over one ``RegistryClient`` of the list each). One registry is killed
(SIGKILL) while every agent is parked; then a new server is published, and every agent must
find it, those that were parked on the dead one included.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from podgrid.broker.publisher import Publication
from podgrid.config.settings import PodSettings
from podgrid.jobagent.poller import ServerPoller
from podgrid.jobagent.slot import SlotFlags, describe_slot
from podgrid.monitoring.client import RegistryClient
from podgrid.monitoring.publish_target import FanOutPublisher, open_publisher
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import RegistrySettings
from podgrid.protocol import MasterParam, Requirements
from tests.monitoring.registry_helpers import TOKEN, sample, send_udp, until_received
from tests.monitoring.test_cli_monitoring import start, wait_started
from tests.monitoring.xdr_encoder import encode

AGENTS = 30
SLOT = describe_slot(
    SlotFlags(cores=1, memory_mb=1024, ttl_s=600),
    agent_id="a",
    site="S",
    ce="c",
    default_ttl_s=600,
    env={},
)


@pytest.fixture
def registries(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    started: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for i in range(3):
            addresses = ["--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"]
            state = ["--state-dir", str(tmp_path / f"r{i}")]
            proc = start([*addresses, "--token-file", str(tokens), *state, "--open-apmon"])
            event, _ = wait_started(proc)
            started.append((proc, str(event["http_url"])))
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def waiters(url: str) -> int:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
        return int(json.loads(resp.read())["waiters"])


async def parked(urls: list[str], total: int) -> list[int]:
    for _ in range(500):
        counts = await asyncio.to_thread(lambda: [waiters(u) for u in urls])
        if sum(counts) == total:
            return counts
        await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {total} parked agents: {counts}")


async def test_three_registries_one_killed_under_load_no_agent_misses_a_new_server(
    registries: list[tuple[subprocess.Popen[str], str]],
) -> None:
    urls = [url for _, url in registries]
    registry_list = ",".join(urls)
    pod = PodSettings(poll_interval_s=30, poll_duration_s=60, registry_url=registry_list)
    sink = open_publisher(pod.registry_url, TOKEN)
    assert isinstance(sink, FanOutPublisher)
    assert len(sink.publishers) == 3
    static = {
        MasterParam.ADDRESS: "https://127.0.0.1:9/attach",
        MasterParam.REQUIREMENTS: Requirements().to_json(),
    }
    publication = Publication(sink, 77, static)
    stopping = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        clients = [RegistryClient(registry_list, session) for _ in range(AGENTS)]
        pollers = [ServerPoller(c, session, longpoll=True) for c in clients]
        windows = [
            asyncio.create_task(p.window(SLOT, lambda: pod, asyncio.Event(), stopping))
            for p in pollers
        ]
        try:
            spread = await parked(urls, AGENTS)
            assert all(n > 0 for n in spread), f"agents did not spread: {spread}"
            victim, victim_url = registries[1]
            on_victim = [c for c in clients if str(c.url) == victim_url]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            # Published while the killed registry's agents are still moving to the other two
            # (to the dead one it fails, logged; the publication as a whole goes through).
            assert await publication.send(needed=4, workers=0, state="PUBLISHING")
            found = await asyncio.wait_for(asyncio.gather(*windows), 15)
        finally:
            stopping.set()
            for task in windows:
                task.cancel()
            await sink.close()
    assert [[o.request_id for o in offers] for offers in found] == [["77"]] * AGENTS
    assert on_victim
    assert all(c.failovers == 1 for c in on_victim)
    assert all(str(c.url) != victim_url for c in clients)


async def test_two_registries_share_one_http_port_with_reuse_port(tmp_path: Path) -> None:
    first = RegistrySettings(http_port=0, udp_port=0, reuse_port=True, state_dir=tmp_path)
    async with run_registry(first) as a:
        port = int(a.http_url.rsplit(":", 1)[1])
        second = first.model_copy(update={"http_port": port})
        async with run_registry(second) as b:
            assert b.http_url == a.http_url
            for reg in (a, b):  # publishers send to each member's own ApMon port
                send_udp(reg.udp_addr, encode("PoD_Masters", "5", {"NeededWorkers": 2}))
                await until_received(reg.app, 1)
            url = f"{a.http_url}/rest/*/PoD_Masters/*/NeededWorkers"
            for _ in range(20):  # a fresh connection each: the kernel spreads them
                async with aiohttp.ClientSession() as http, http.get(url) as resp:
                    assert "/PoD_Masters/5/NeededWorkers/2/" in await resp.text()
            served = [
                sample(reg.app, "podgrid_registry_queries_total", format="text/plain")
                for reg in (a, b)
            ]
            assert sum(served) == 20
            assert all(n > 0 for n in served), served
