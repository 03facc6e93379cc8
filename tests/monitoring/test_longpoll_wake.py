"""A wake costs one render: waiters on one query get the same bytes, written by the hub.

Real registry, real sockets: aiohttp clients and raw HTTP/1.1 connections on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from podgrid.pki import CertificateAuthority
from tests.monitoring.registry_helpers import sample, send_udp
from tests.monitoring.test_longpoll import waiters
from tests.monitoring.xdr_encoder import encode

QUERY = "/rest/*/PoD_Masters/*/NeededWorkers/1:"


@pytest.fixture
async def registry(tmp_path) -> AsyncIterator[RunningRegistry]:  # type: ignore[no-untyped-def]
    settings = RegistrySettings(http_port=0, udp_port=0, max_wait_s=20, state_dir=tmp_path)
    async with run_registry(settings) as running:
        yield running


async def raw_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, version: str = "1.1"
) -> tuple[bytes, dict[str, str], bytes]:
    """One request on an open connection: (status line, headers, body)."""
    request = f"GET {path} HTTP/{version}\r\nHost: x\r\nAccept: application/json\r\n\r\n"
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status.encode(), headers, body


async def test_waiters_on_one_query_get_the_same_answer_from_one_render(
    registry: RunningRegistry,
) -> None:
    async with aiohttp.ClientSession() as http:

        async def poll(fmt: str) -> tuple[int, str, str, str]:
            url = f"{registry.http_url}{QUERY}?wait=15&since=0&Accept={fmt}"
            async with http.get(url) as resp:
                return (
                    resp.status,
                    await resp.text(),
                    resp.headers["X-Request-Id"],
                    resp.headers["X-Registry-Now-Ms"],
                )

        polls = [asyncio.create_task(poll("application/json")) for _ in range(20)]
        polls += [asyncio.create_task(poll("text/csv")) for _ in range(5)]
        await waiters(registry, 25)
        renders = sample(registry.app, "podgrid_registry_wake_renders_total")
        send_udp(registry.udp_addr, encode("PoD_Masters", "7", {"NeededWorkers": 2}))
        answers = await asyncio.wait_for(asyncio.gather(*polls), 5)
    json_answers, csv_answers = answers[:20], answers[20:]
    assert {(status, text) for status, text, _, _ in json_answers} == {(200, json_answers[0][1])}
    [row] = json.loads(json_answers[0][1])["results"]
    assert (row["node"], row["parameter"], row["value"]) == ("7", "NeededWorkers", 2)
    assert {text for _, text, _, _ in csv_answers} == {csv_answers[0][1]}
    assert "|PoD_Masters|7|NeededWorkers|2|" in csv_answers[0][1]
    assert len({rid for _, _, rid, _ in answers}) == 25  # each answer keeps its own id
    assert all(int(now) > 0 for _, _, _, now in answers)
    # two queries asked: two renders, not twenty-five
    assert sample(registry.app, "podgrid_registry_wake_renders_total") - renders == 2
    assert sample(registry.app, "podgrid_registry_longpoll_waiters") == 0


async def test_a_woken_connection_stays_open_for_the_next_long_poll(
    registry: RunningRegistry,
) -> None:
    reader, writer = await asyncio.open_connection(*registry.http_url[7:].split(":"))
    try:
        first = asyncio.create_task(raw_get(reader, writer, f"{QUERY}?wait=15&since=0"))
        await waiters(registry, 1)
        send_udp(registry.udp_addr, encode("PoD_Masters", "8", {"NeededWorkers": 1}, seq=1))
        status, headers, body = await asyncio.wait_for(first, 5)
        assert status == b"HTTP/1.1 200 OK"
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert json.loads(body)["results"][0]["node"] == "8"
        since = headers["x-registry-now-ms"]
        # the same socket parks again and is woken again
        second = asyncio.create_task(raw_get(reader, writer, f"{QUERY}?wait=15&since={since}"))
        await waiters(registry, 1)
        send_udp(registry.udp_addr, encode("PoD_Masters", "9", {"NeededWorkers": 3}, seq=2))
        status, _, body = await asyncio.wait_for(second, 5)
        assert status == b"HTTP/1.1 200 OK"
        assert {r["node"] for r in json.loads(body)["results"]} == {"8", "9"}
    finally:
        writer.close()


async def test_http_1_0_and_head_long_polls_are_answered_the_ordinary_way(
    registry: RunningRegistry,
) -> None:
    reader, writer = await asyncio.open_connection(*registry.http_url[7:].split(":"))
    try:
        poll = asyncio.create_task(raw_get(reader, writer, f"{QUERY}?wait=15&since=0", "1.0"))
        await waiters(registry, 1)
        send_udp(registry.udp_addr, encode("PoD_Masters", "5", {"NeededWorkers": 1}))
        status, headers, body = await asyncio.wait_for(poll, 5)
        assert status == b"HTTP/1.0 200 OK"
        assert json.loads(body)["results"][0]["node"] == "5"
        assert "x-request-id" in headers
    finally:
        writer.close()
    async with aiohttp.ClientSession() as http:
        url = f"{registry.http_url}{QUERY}?wait=0.2&since=999999999999999"
        async with http.head(url) as resp:
            assert resp.status == 200
            assert "X-Request-Id" in resp.headers


async def test_woken_answers_go_out_over_https_too(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("test CA", 3600)
    pair = ca.issue("registry", ["127.0.0.1"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(pair.cert_pem)
    key.write_text(pair.key_pem)
    settings = RegistrySettings(
        http_port=0, udp_port=0, tls_cert=cert, tls_key=key, state_dir=tmp_path
    )
    trust = ssl.create_default_context(cadata=ca.cert_pem)
    async with run_registry(settings) as reg:
        assert reg.http_url.startswith("https://")
        connector = aiohttp.TCPConnector(ssl=trust, limit=1)  # one connection, reused
        async with aiohttp.ClientSession(connector=connector) as http:
            since = "1"
            for n, node in enumerate(("11", "12"), 1):
                url = f"{reg.http_url}{QUERY}?wait=15&since={since}&Accept=application/json"
                poll = asyncio.create_task(http.get(url))
                await waiters(reg, 1)
                send_udp(reg.udp_addr, encode("PoD_Masters", node, {"NeededWorkers": 1}, seq=n))
                async with await asyncio.wait_for(poll, 5) as resp:
                    assert resp.status == 200
                    nodes = {r["node"] for r in (await resp.json())["results"]}
                    since = resp.headers["X-Registry-Now-Ms"]
                assert node in nodes
        assert sample(reg.app, "podgrid_registry_wake_answers_total") == 2
