"""Bad input end to end, against the real processes: clear errors, no crash, counters up.

Malformed request files through ``podgrid submit``; garbage ApMon datagrams at the registry;
wrong tokens at the master queue, the registry's publish API and a broker's attach API;
oversize bodies at all three. Afterwards every service still answers, nothing was stored, and
each refusal was counted where the service counts it.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from integration.realgrid import APMON_PASSWORD, REGISTRY_TOKEN, RealGrid, eventually, real_grid
from integration.realgrid import podgrid as podgrid_argv
from tests.harness.mariadb import MariaDB
from tests.monitoring.registry_helpers import send_udp
from tests.monitoring.xdr_encoder import encode

OVERSIZE = b"#" * (2 * 1024 * 1024)  # twice every service's 1 MiB body limit
GOOD = """[server]
name = "good"
min_workers = 1
max_workers = 1
max_wait = "5m"
ttl = "1h"
[worker]
cores = 1
memory = "512MiB"
"""
BAD_FILES: dict[str, tuple[bytes, str]] = {
    # file name: (content, what the error must say)
    "min-above-max.toml": (GOOD.replace("min_workers = 1", "min_workers = 5").encode(), "min"),
    "typo.toml": (GOOD.replace("max_wait", "max_wiat").encode(), "max_wait"),
    "not-toml.toml": (b"[server\nname = \n", "not-toml.toml:1:"),
    "binary.toml": (b"\xff\xfe" + bytes(range(256)) * 16, "not UTF-8"),
    "huge.toml": (OVERSIZE, "file too large"),
}


def samples(url: str, name: str, context: ssl.SSLContext | None = None) -> dict[str, float]:
    """Every sample of ``name`` at a Prometheus endpoint, keyed by its label text."""
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        text = resp.read().decode()
    found = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m is not None and m.group(1) == name:
            found[m.group(2) or ""] = float(m.group(3))
    return found


def status_of(url: str) -> int:
    """The HTTP status of ``GET url``."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(resp.status)


def total(found: dict[str, float], label: str) -> float:
    """The sum of the samples whose labels contain ``label`` (e.g. ``status="401"``)."""
    return sum(v for k, v in found.items() if label in k)


def submit_file(grid: RealGrid, token: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``podgrid submit FILE`` as a user would run it."""
    env = {**grid.env, "PODGRID_URL": grid.mq_url, "PODGRID_TOKEN": token}
    return subprocess.run(
        podgrid_argv("submit", str(path)),
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def _mq_refusals(grid: RealGrid, http: aiohttp.ClientSession, user: str) -> None:
    wrong = {"Authorization": "Bearer not-a-token"}
    mine = {"Authorization": f"Bearer {user}"}
    for method, path in (
        ("GET", "/v1/requests"), ("POST", "/v1/requests"), ("GET", "/v1/jobs"),
        ("POST", "/v1/match"), ("GET", "/v1/servers"), ("GET", "/v1/whoami"),
        ("GET", "/v1/tokens"),
    ):  # fmt: skip
        async with http.request(method, grid.mq_url + path, headers=wrong) as resp:
            assert resp.status == 401, (method, path, resp.status)
            assert (await resp.json())["error"]
    for method, path in (("POST", "/v1/match"), ("GET", "/v1/servers"), ("GET", "/v1/tokens")):
        async with http.request(method, grid.mq_url + path, headers=mine, json={}) as resp:
            assert resp.status == 403, (method, path, resp.status)
    headers = {**mine, "Content-Type": "application/toml"}
    # The service's own edge, past the CLI's checks: a 400 naming where, never a 500.
    async with http.post(
        grid.mq_url + "/v1/requests", data=b"[server\nx=", headers=headers
    ) as resp:
        assert resp.status == 400, resp.status
        doc = await resp.json()
        assert doc["error"]
        assert doc["fields"], doc
    async with http.post(
        grid.mq_url + "/v1/requests", data=io.BytesIO(OVERSIZE), headers=headers
    ) as resp:
        assert resp.status == 413, resp.status
        assert (await resp.json())["error"]


async def _registry_refusals(grid: RealGrid, http: aiohttp.ClientSession) -> None:
    url = grid.registry_url + "/publish"
    body: dict[str, Any] = {"cluster": "PoD_Masters", "node": "666", "params": {"Address": "x"}}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 401, resp.status
    good = {"Authorization": f"Bearer {REGISTRY_TOKEN}"}
    async with http.post(url, data=io.BytesIO(OVERSIZE), headers=good) as resp:
        assert resp.status == 413, resp.status


async def _broker_refusals(grid: RealGrid, http: aiohttp.ClientSession) -> None:
    async with grid.client(grid.agent_token) as agent:
        listed = await agent.servers()
    [vouched] = listed.servers
    server = vouched.model_dump(mode="json")
    context = ssl.create_default_context(cadata=listed.broker_ca)
    url = server["attach_url"].rstrip("/") + "/v1/attach"
    slot = {"agent_id": "mallory", "site": "X", "ce": "Y", "host": "evil", "cores": 1,
            "memory_mb": 1024, "ttl_s": 600, "packages": [], "csr": "junk"}  # fmt: skip
    for headers in ({}, {"Authorization": "Bearer forged-ticket"}):
        async with http.post(
            url, json=slot, headers=headers, ssl=context, server_hostname=server["server_name"]
        ) as resp:
            assert resp.status in (401, 403), resp.status
    async with http.post(
        url, data=io.BytesIO(OVERSIZE), headers={"Authorization": f"Bearer {server['ticket']}"},
        ssl=context, server_hostname=server["server_name"],
    ) as resp:  # fmt: skip
        assert resp.status == 413, resp.status


async def test_bad_input_everywhere_is_refused_clearly_and_counted(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    async with real_grid(tmp_path, mariadb, launcher="local") as grid:
        user = await grid.token("user", "alice")
        async with grid.client(user) as alice:
            # podgrid submit: exit 2 with an error that names the problem; nothing stored.
            for name, (content, says) in BAD_FILES.items():
                path = tmp_path / name
                path.write_bytes(content)
                done = await asyncio.to_thread(submit_file, grid, user, path)
                assert done.returncode == 2, (name, done.stdout, done.stderr)
                assert says in done.stderr, (name, done.stderr)
                assert "Traceback" not in done.stderr
            assert [r async for r in alice.list_requests()] == []
            (tmp_path / "good.toml").write_text(GOOD)
            good = await asyncio.to_thread(submit_file, grid, user, tmp_path / "good.toml")
            assert good.returncode == 0, good.stderr
            [record] = [r async for r in alice.list_requests()]

            async def published() -> bool:
                async with grid.registry_client() as registry:
                    return bool(await registry.query(f"*/PoD_Masters/{record.id}/Address"))

            await eventually(published, 60, "the good request's broker publishing")

        # Garbage datagrams: dropped and counted by reason, the registry goes on.
        dropped_name = "podgrid_registry_datagrams_dropped_total"
        before = sum(samples(grid.registry_url + "/metrics", dropped_name).values())
        fake = {"Address": "http://127.0.0.1:9/", "NeededWorkers": 5}
        real = encode("PoD_Masters", "4242", fake, password=APMON_PASSWORD)
        send_udp(
            grid.udp,
            os.urandom(300),
            b"",
            real[: len(real) // 2],
            encode("PoD_Masters", "4242", fake, password="wrong"),
            encode("PoD_Masters", "4242", fake),
        )

        def counted() -> bool:
            now = sum(samples(grid.registry_url + "/metrics", dropped_name).values())
            return now - before >= 4

        await eventually(counted, 20, "the garbage datagrams counted")
        async with grid.registry_client() as registry:
            assert await registry.query("*/PoD_Masters/4242/*") == []

        mq_seconds = "podgrid_masterqueue_http_request_duration_seconds_count"
        mq_before = samples(grid.mq_url + "/metrics", mq_seconds)
        rejected = "podgrid_registry_publishes_rejected_total"
        reg_before = samples(grid.registry_url + "/metrics", rejected)
        async with aiohttp.ClientSession() as http:
            await _mq_refusals(grid, http, user)
            await _registry_refusals(grid, http)
            await _broker_refusals(grid, http)
        mq_after = samples(grid.mq_url + "/metrics", mq_seconds)
        for status, n in (("400", 1), ("401", 7), ("403", 3), ("413", 1)):
            grew = total(mq_after, f'status="{status}"') - total(mq_before, f'status="{status}"')
            assert grew >= n, (status, grew)
        reg_after = samples(grid.registry_url + "/metrics", rejected)
        assert total(reg_after, "unauthorized") - total(reg_before, "unauthorized") == 2
        assert total(reg_after, "too_large") - total(reg_before, "too_large") == 1

        # Everyone is still up and the good data is intact.
        for url in (grid.mq_url + "/healthz", grid.registry_url + "/healthz"):
            assert await asyncio.to_thread(status_of, url) == 200
        assert grid.mq.alive()
        assert grid.registry.alive()
        async with grid.client(user) as alice:
            assert (await alice.get_request(record.id)).state in ("PUBLISHING", "STARTING")
        async with grid.registry_client() as registry:
            assert await registry.query(f"*/PoD_Masters/{record.id}/Address")
