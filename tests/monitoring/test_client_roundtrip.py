"""The client against a real registry: ApMon and HTTP publish, queries in all formats, long-poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from podgrid.config.retry import set_testing
from podgrid.errors import BadRequest, Unauthorized, Unreachable
from podgrid.monitoring.client import (
    ApMonPublisher,
    HttpPublisher,
    Publisher,
    PublishItem,
    RegistryClient,
    Sample,
    rest_path,
    wait_for,
)
from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.harness.ports import free_port

TOKEN = "test-publish-token"
SERVER_QUERY = "*/PoD_Masters/*/-60000/-1/Address|NeededWorkers"


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RunningRegistry]:
    settings = RegistrySettings(
        farm="testfarm",
        http_port=0,
        udp_port=0,
        publish_tokens=frozenset({TOKEN}),
        max_wait_s=10,
        state_dir=tmp_path,
    )
    async with run_registry(settings) as running:
        yield running


@pytest.fixture
async def client(registry: RunningRegistry) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(registry.http_url) as c:
        yield c


@pytest.fixture
def no_backoff() -> Iterator[None]:
    set_testing(True)
    yield
    set_testing(False)


async def test_apmon_server_is_visible_in_all_three_formats(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    async with ApMonPublisher(*registry.udp_addr) as pub:
        sent = await pub.send(
            "PoD_Masters", "42", {"Address": "http://127.0.0.1:9000", "NeededWorkers": 3}
        )
    assert sent == 1
    first = await wait_for(client, SERVER_QUERY, timeout_s=5)
    assert len(first) == 2
    before_ms = time.time() * 1000
    for fmt in ("json", "text", "csv"):
        result = await client.query(SERVER_QUERY, fmt=fmt)
        got = sorted(result, key=lambda s: s.parameter)
        assert [(s.farm, s.cluster, s.node, s.parameter, s.value) for s in got] == [
            ("testfarm", "PoD_Masters", "42", "Address", "http://127.0.0.1:9000"),
            ("testfarm", "PoD_Masters", "42", "NeededWorkers", 3),
        ], fmt
        assert all(abs(s.timestamp_ms - before_ms) < 10_000 for s in got)
        assert result.now_ms is not None
        assert abs(result.now_ms - time.time() * 1000) < 10_000


async def test_http_publish_batch_and_parameter_listing(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    t_ms = int(time.time() * 1000) - 5_000
    async with HttpPublisher(registry.http_url, TOKEN) as pub:
        accepted = await pub.publish(
            [
                PublishItem(
                    "PoD_Agents_CERN", "agent-1", {"State": "POLLING", "RemainingTTL": 3600}
                ),
                PublishItem("PoD_MasterQueue", "batch", {"WaitingJobs": 7, "Load": 0.5}, t_ms),
            ]
        )
        assert accepted == 4  # values stored
        assert await pub.send("PoD_Agents_GSI", "g-1", {"State": "BATCH|x/y"}) == 1
    queue = await client.query(rest_path("PoD_MasterQueue", "WaitingJobs|Load", node="batch"))
    assert sorted((s.parameter, s.value, s.timestamp_ms) for s in queue) == [
        ("Load", 0.5, t_ms),
        ("WaitingJobs", 7, t_ms),
    ]
    for fmt in ("json", "text", "csv"):
        agents = await client.query("/rest/*/PoD_Agents_*/*/State", fmt=fmt)
        assert sorted((s.cluster, s.value) for s in agents) == [
            ("PoD_Agents_CERN", "POLLING"),
            ("PoD_Agents_GSI", "BATCH|x/y"),
        ], fmt
        names = await client.parameters("PoD_Agents_CERN", fmt=fmt)
        assert sorted(names) == ["RemainingTTL", "State"], fmt


async def test_publish_refusals_are_clear_errors(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    async with aiohttp.ClientSession() as session:
        wrong = HttpPublisher(registry.http_url, "wrong-token", session=session)
        with pytest.raises(Unauthorized) as denied:
            await wrong.send("c", "n", {"x": 1})
        assert denied.value.status == 401
        good = HttpPublisher(registry.http_url, TOKEN, session=session)
        with pytest.raises(BadRequest) as bad:
            await good.publish([PublishItem("", "n", {"x": 1})])
        assert bad.value.status == 400
        assert bad.value.fields, "the registry names the bad field"
        assert "cluster" in str(bad.value)
        await wrong.close()  # a lent session stays open
        assert not session.closed
    with pytest.raises(BadRequest) as bad_query:
        await client.query("*/PoD_Masters/*/NeededWorkers", wait_s=-1)
    assert bad_query.value.status == 400


async def test_unreachable_registry_is_retried_then_reported(no_backoff: None) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    retries = "podgrid_retry_attempts_total"
    before = REGISTRY.get_sample_value(retries, {"kind": "registry_publish"}) or 0.0
    async with HttpPublisher(url, TOKEN, attempts=3) as pub:
        with pytest.raises(Unreachable, match="cannot reach registry"):
            await pub.send("c", "n", {"x": 1})
    after = REGISTRY.get_sample_value(retries, {"kind": "registry_publish"}) or 0.0
    assert after - before == 2
    async with RegistryClient(url) as c:
        with pytest.raises(Unreachable):
            await c.query("*/c/*/x")


async def test_long_poll_learns_of_a_new_server_within_one_round_trip(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    query = rest_path("PoD_Masters", "NeededWorkers", tmin_ms=-60000, tmax_ms=-1, condition="1:")
    empty = await client.query(query)
    assert empty == []
    assert empty.now_ms is not None

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        async with ApMonPublisher(*registry.udp_addr) as pub:
            await pub.send("PoD_Masters", "7", {"NeededWorkers": 2, "State": "PUBLISHING"})

    started = time.monotonic()
    publisher = asyncio.create_task(publish_later())
    result = await client.query(query, wait_s=8, since_ms=empty.now_ms)
    took_s = time.monotonic() - started
    await publisher
    assert [(s.node, s.parameter, s.value) for s in result] == [("7", "NeededWorkers", 2)]
    assert 0.25 < took_s < 3, f"answered after {took_s:.2f} s"
    # Nothing new: the wait runs to its end and returns the current answer.
    started = time.monotonic()
    again = await client.query(query, wait_s=0.5, since_ms=result.now_ms)
    assert time.monotonic() - started >= 0.45
    assert [s.node for s in again] == ["7"]


def test_sample_is_a_plain_value() -> None:
    s = Sample("f", "c", "n", "p", 1, 2)
    assert s == Sample("f", "c", "n", "p", 1, 2)
    with pytest.raises(AttributeError):
        s.value = 3  # type: ignore[misc]


async def test_both_publishers_fit_the_publisher_protocol(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    publishers: list[Publisher] = [
        ApMonPublisher(*registry.udp_addr),
        HttpPublisher(registry.http_url, TOKEN),
    ]
    for i, pub in enumerate(publishers):
        assert await pub.send("PoD_Masters", f"p{i}", {"NeededWorkers": i + 1}) == 1
        await pub.close()
    result = await wait_for(client, "*/PoD_Masters/p1/NeededWorkers", timeout_s=5)
    assert [s.value for s in result] == [2]
    result = await wait_for(client, "*/PoD_Masters/p0/NeededWorkers", timeout_s=5)
    assert [s.value for s in result] == [1]
