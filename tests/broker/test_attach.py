"""The attach API: tokens, requirements, the storm, reservation expiry, detach."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.broker.grid import Grid, slot, until

STORM_REQUEST = """
[server]
name = "storm"
min_workers = 1
max_workers = 20
[worker]
cores = 1
memory = "256MiB"
"""

SMALL_REQUEST = """
[server]
name = "small"
min_workers = 1
max_workers = 1
[worker]
cores = 2
memory = "1GiB"
packages = ["ROOT::v6-32"]
sites = ["CERN", "Local"]
"""


async def test_storm_grants_exactly_the_free_places(grid: Grid) -> None:
    async with grid.broker(STORM_REQUEST) as running:
        rid = running.broker.record.id
        calls = [grid.attach(running.url, slot(f"agent-{i}")) for i in range(500)]
        answers = await asyncio.gather(*calls)
        statuses = [status for status, _ in answers]
        granted = [body["name"] for status, body in answers if status == 200]
        assert statuses.count(200) == 20
        assert statuses.count(409) == 480
        assert {body["reason"] for status, body in answers if status == 409} == {"full"}
        assert len(set(granted)) == 20
        assert running.broker.places.occupied == 20
        await grid.wait_registry(rid, "NeededWorkers", 0)


@pytest.mark.parametrize(
    "token",
    [None, "not-a-token", "user", "agent", "other-request", "expired", "forged"],
)
async def test_attach_needs_a_ticket_of_this_server(grid: Grid, token: str | None) -> None:
    """Only a live ticket the master queue made for this request opens its broker.

    The agent's own token is refused too: it is never shown to a broker.
    """
    async with grid.broker(SMALL_REQUEST) as running:
        rid = running.broker.record.id
        good = grid.ticket(rid)
        offered = {
            None: None,
            "not-a-token": "not-a-token",
            "user": grid.user_token,
            "agent": grid.agent_token,
            "other-request": grid.ticket(rid + 1),
            "expired": grid.ticket(rid, ttl_s=-1),
            "forged": good.rsplit(".", 1)[0] + "." + "0" * 64,
        }[token]
        headers = {} if offered is None else {"Authorization": f"Bearer {offered}"}
        url = f"{running.url}/v1/attach"
        async with grid.session.post(url, json=slot("a1", cores=4), headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"
        assert running.broker.places.occupied == 0


@pytest.mark.parametrize(
    ("change", "unmet"),
    [
        ({"cores": 1}, "cores"),
        ({"memory_mb": 512}, "memory_mb"),
        ({"packages": ["numpy"]}, "packages"),
        ({"site": "Elsewhere"}, "site"),
        ({"ttl_s": 60}, "ttl_s"),
    ],
)
async def test_requirements_not_met_is_409(grid: Grid, change: dict[str, Any], unmet: str) -> None:
    async with grid.broker(SMALL_REQUEST) as running:
        body = slot("a1", **{"cores": 4, "memory_mb": 2048, "site": "CERN", **change})
        status, answer = await grid.attach(running.url, body)
        assert status == 409
        assert answer["reason"] == "requirements"
        assert [u.split(":")[0] for u in answer["unmet"]] == [unmet]
        # The same slot with everything in place is granted.
        status, answer = await grid.attach(running.url, slot("a2", cores=4, memory_mb=2048))
        assert status == 200
        assert answer["nthreads"] == 2
        assert answer["memory_limit"] == "1024MiB"
        assert answer["lifetime_s"] == 3600 - running.broker.settings.lifetime_margin_s


async def test_bad_slot_is_400_with_the_field(grid: Grid) -> None:
    async with grid.broker(SMALL_REQUEST) as running:
        status, answer = await grid.attach(running.url, slot("a1", cores="many"))
        assert status == 400
        assert answer["fields"][0]["loc"] == ["cores"]


async def test_unused_reservation_expires_and_frees_the_place(grid: Grid) -> None:
    async with grid.broker(SMALL_REQUEST, attach_timeout_s=0.5) as running:
        rid = running.broker.record.id
        fits = {"cores": 4, "memory_mb": 2048}
        status, first = await grid.attach(running.url, slot("a1", **fits))
        assert status == 200
        await grid.wait_registry(rid, "NeededWorkers", 0)
        status, answer = await grid.attach(running.url, slot("a2", **fits))
        assert (status, answer["reason"]) == (409, "full")
        await grid.wait_registry(rid, "NeededWorkers", 1)
        status, second = await grid.attach(running.url, slot("a2", **fits))
        assert status == 200
        assert second["name"] != first["name"]


async def test_retried_attach_gets_the_same_place(grid: Grid) -> None:
    async with grid.broker(SMALL_REQUEST) as running:
        fits = {"cores": 4, "memory_mb": 2048}
        first = await grid.attach(running.url, slot("a1", **fits))
        again = await grid.attach(running.url, slot("a1", **fits))
        assert (first[0], first[1]["name"]) == (again[0], again[1]["name"]) == (200, "pod1-w1")
        # A retry comes with a new CSR: the same place, a certificate for the new key.
        assert first[1]["tls_cert"] != again[1]["tls_cert"]
        assert running.broker.places.occupied == 1


async def test_detach_gives_the_place_back(grid: Grid) -> None:
    async with grid.broker(SMALL_REQUEST) as running:
        rid = running.broker.record.id
        fits = {"cores": 4, "memory_mb": 2048}
        _, grant = await grid.attach(running.url, slot("a1", **fits))
        headers = {"Authorization": f"Bearer {grid.ticket_for(running.url)}"}
        url = f"{running.url}/v1/detach"
        body = {"agent_id": "someone-else", "name": grant["name"]}
        async with grid.session.post(url, json=body, headers=headers) as resp:
            assert resp.status == 404
        body["agent_id"] = "a1"
        async with grid.session.post(url, json=body, headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["released"] == "reservation"

        async def needed() -> object:
            return await grid.registry_value(rid, "NeededWorkers")

        await until(needed, 1, 10)
        assert (await grid.attach(running.url, slot("a2", **fits)))[0] == 200
