"""The registry over real sockets: ApMon UDP in, REST out in all formats, publish, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from podgrid.monitoring import keys
from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.monitoring.registry_helpers import TOKEN, sample, send_udp, until_received
from tests.monitoring.xdr_encoder import encode

DONE_WHEN_QUERY = "/rest/*/PoD_Masters/*/-60000/-1/Address|NeededWorkers"
SERVER = {"Address": "http://127.0.0.1:9000", "NeededWorkers": 3}


@pytest.fixture
async def registry(tmp_path) -> AsyncIterator[RunningRegistry]:  # type: ignore[no-untyped-def]
    settings = RegistrySettings(
        farm="testfarm",
        http_port=0,
        udp_port=0,
        publish_tokens=frozenset({TOKEN}),
        max_publish_bytes=64 * 1024,
        state_dir=tmp_path,
    )
    async with run_registry(settings) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, accept: str | None = None) -> tuple[int, str]:
    headers = {"Accept": accept} if accept else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


def split_row(line: str, sep: str) -> tuple[str, ...]:
    """The contract's rule: four fields from the left, the timestamp from the right."""
    farm, cluster, node, param, rest = line.split(sep, 4)
    value, _, ts = rest.rpartition(sep)
    return farm, cluster, node, param, value, ts


async def test_done_when_datagram_is_visible_in_all_three_formats(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    send_udp(registry.udp_addr, encode("PoD_Masters", "42", SERVER))
    await until_received(registry.app, 1)
    url = registry.http_url + DONE_WHEN_QUERY

    status, text = await get(http, url)
    assert status == 200
    rows = [split_row(line, "/") for line in text.splitlines()]
    assert [r[:5] for r in rows] == [
        ("testfarm", "PoD_Masters", "42", "Address", "http://127.0.0.1:9000"),
        ("testfarm", "PoD_Masters", "42", "NeededWorkers", "3"),
    ]
    stamp = int(rows[0][5])

    status, text = await get(http, url, "text/csv")
    lines = text.splitlines()
    assert (status, lines[0]) == (200, "#Farm|Cluster|Node|Parameter|Value|Timestamp")
    assert [split_row(line, "|") for line in lines[1:]] == [
        ("testfarm", "PoD_Masters", "42", "Address", "http://127.0.0.1:9000", str(stamp)),
        ("testfarm", "PoD_Masters", "42", "NeededWorkers", "3", str(stamp)),
    ]

    async with http.get(url, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        now_ms = int(resp.headers["X-Registry-Now-Ms"])
        body = await resp.json()
    assert body == {
        "results": [
            {
                "farm": "testfarm",
                "cluster": "PoD_Masters",
                "node": "42",
                "parameter": "Address",
                "value": "http://127.0.0.1:9000",
                "timestamp": stamp,
            },
            {
                "farm": "testfarm",
                "cluster": "PoD_Masters",
                "node": "42",
                "parameter": "NeededWorkers",
                "value": 3,
                "timestamp": stamp,
            },
        ]
    }
    assert now_ms - 60_000 <= stamp <= now_ms
    status, text = await get(http, url + "?Accept=text/csv", "application/json")
    assert text.startswith("#Farm|")


async def test_last_values_history_conditions_and_name_listing(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    for seq, needed in enumerate([5, 2, 0], start=1):
        send_udp(registry.udp_addr, encode("PoD_Masters", "7", {"NeededWorkers": needed}, seq=seq))
        await until_received(registry.app, seq)
    send_udp(registry.udp_addr, encode("PoD_Agents_CERN", "a1", {"State": "POLLING"}, seq=9))
    await until_received(registry.app, 4)
    base = registry.http_url + "/rest"
    _, text = await get(http, base + "/testfarm/PoD_Masters/7/NeededWorkers")
    assert [split_row(r, "/")[4] for r in text.splitlines()] == ["0"]  # last value only
    _, text = await get(http, base + "/*/PoD_Masters/*/-60000/-1/NeededWorkers")
    assert [split_row(r, "/")[4] for r in text.splitlines()] == ["5", "2", "0"]  # history
    _, text = await get(http, base + "/*/PoD_Masters/*/-60000/-1/NeededWorkers/1:")
    assert [split_row(r, "/")[4] for r in text.splitlines()] == ["5", "2"]
    _, text = await get(http, base + "/*/PoD_Masters/*/NeededWorkers/1:")
    assert text == ""  # the last value (0) does not satisfy 1:
    _, text = await get(http, base + "/*/PoD_Agents_*/*")
    assert text == "State\n"
    _, text = await get(http, base + "/*/*/*", "application/json")
    assert json.loads(text) == {"results": ["NeededWorkers", "State"]}
    _, text = await get(http, base + "/otherfarm/*/*/State")
    assert text == ""


async def test_publish_stores_values_for_the_own_farm(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    batch = [
        {"cluster": "PoD_MasterQueue", "node": "batch", "params": {"WaitingJobs": 12}},
        {
            "cluster": "PoD_Masters",
            "node": "r1",
            "params": {"Load": 0.5, "State": "READY"},
            "time_ms": 1_700_000_000_000,
        },
    ]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(registry.http_url + "/publish", json=batch, headers=auth) as resp:
        assert (resp.status, await resp.json()) == (200, {"accepted": 3})
    single = {"cluster": "PoD_MasterQueue", "node": "batch", "params": {"RunningJobs": 1}}
    async with http.post(registry.http_url + "/publish", json=single, headers=auth) as resp:
        assert (resp.status, await resp.json()) == (200, {"accepted": 1})
    _, text = await get(http, registry.http_url + "/rest/*/*/*/0/2000000000000/*", "text/csv")
    rows = sorted(split_row(line, "|") for line in text.splitlines()[1:])
    assert [r[1:5] for r in rows] == [
        ("PoD_MasterQueue", "batch", "RunningJobs", "1"),
        ("PoD_MasterQueue", "batch", "WaitingJobs", "12"),
        ("PoD_Masters", "r1", "Load", "0.5"),
        ("PoD_Masters", "r1", "State", "READY"),
    ]
    assert rows[2][5] == "1700000000000"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", "Bearer tökén"]
)
async def test_publish_without_the_right_token_is_401(
    registry: RunningRegistry, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    body = {"cluster": "c", "node": "n", "params": {"x": 1}}
    async with http.post(registry.http_url + "/publish", json=body, headers=headers) as resp:
        assert resp.status == 401
        answer = await resp.json()
        assert answer["error"] == "unauthorized"
        assert "token" in answer["message"]
    assert len(registry.app[keys.STORE]) == 0
    assert sample(registry.app, "podgrid_registry_publishes_rejected_total", reason="unauthorized")


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        (b"{not json", None, "not valid JSON"),
        (b'{"cluster":"c","node":"n","params":{"x":NaN}}', None, "not valid JSON"),
        (b'{"node":"n","params":{}}', [0, "cluster"], "Field required"),
        (b'{"cluster":"a/b","node":"n","params":{}}', [0, "cluster"], "should match pattern"),
        (b'{"cluster":"c","node":"n","params":{"x":true}}', [0, "params", "x"], "got True"),
        (b'{"cluster":"c","node":"n","params":{"x":[1]}}', [0, "params", "x"], "finite number"),
        (b'{"cluster":"c","node":"n","params":{"x":"a\\nb"}}', [0, "params", "x"], "one line"),
        (b'{"cluster":"c","node":"n","params":{"x":1e999}}', [0, "params", "x"], "finite"),
        (
            b'{"cluster":"c","node":"n","params":{"x":99999999999999999999}}',
            [0, "params", "x"],
            "64 bits",
        ),
        (b'{"cluster":"c","node":"n","params":{},"time_ms":"now"}', [0, "time_ms"], "integer"),
        (
            b'{"cluster":"c","node":"n","params":{},"time_ms":9999999999999999}',
            [0, "time_ms"],
            "future",
        ),
        (b'{"cluster":"c","node":"n","params":{},"extra":1}', [0, "extra"], "not permitted"),
        (b'[{"cluster":"c","node":"n","params":{}}, 5]', [1], "valid dictionary"),
        (b'"just a string"', [], "valid list"),
        (b"[" * 100_00 + b"]" * 100_00, None, "not valid JSON"),
    ],
)
async def test_bad_publish_bodies_get_400_naming_the_field(
    registry: RunningRegistry,
    http: aiohttp.ClientSession,
    body: bytes,
    loc: list[object] | None,
    msg: str,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with http.post(registry.http_url + "/publish", data=body, headers=auth) as resp:
        assert resp.status == 400
        answer = await resp.json()
    if loc is None:
        assert answer["error"] == "invalid_body"
        assert msg in answer["message"]
    else:
        assert any(f["loc"] == loc and msg in f["msg"] for f in answer["fields"]), answer
    assert len(registry.app[keys.STORE]) == 0


async def test_too_large_publish_is_413(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    body = {"cluster": "c", "node": "n", "params": {f"p{i}": "x" * 100 for i in range(1000)}}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(registry.http_url + "/publish", json=body, headers=auth) as resp:
        assert resp.status == 413
    assert len(registry.app[keys.STORE]) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/rest/",
        "/rest/a/b",
        "/rest/a/b/c/x/y/z/w/v",
        "/rest/a/b/c/-1/x/p",
        "/rest/a/b/c/p/1",
        "/rest/a/b/c/p/x:y",
        "/rest/a/b/c/p?wait=1e308",
        "/rest/a/b/c/p?wait=-1",
        "/rest/a/b/c/p?wait=nan",
        "/rest/a/b/c/p?wait=abc",
        "/rest/a/b/c/p?since=soon",
        "/rest/a/b/c/p?Accept=text/html",
        "/rest/a//c/p",
    ],
)
async def test_bad_rest_queries_are_400_with_a_message(
    registry: RunningRegistry, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(registry.http_url + path) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]


async def test_wrong_password_and_garbage_are_dropped_and_counted(
    tmp_path,  # type: ignore[no-untyped-def]
    http: aiohttp.ClientSession,
) -> None:
    settings = RegistrySettings(http_port=0, udp_port=0, apmon_password="pw", state_dir=tmp_path)
    async with run_registry(settings) as reg:
        send_udp(
            reg.udp_addr,
            encode("c", "n", {"x": 1}, password="wrong", seq=1),
            b"\x00garbage",
            encode("c", "n", {"x": 2}, password="pw", seq=2),
        )
        await until_received(reg.app, 3)
        dropped = "podgrid_registry_datagrams_dropped_total"
        assert sample(reg.app, dropped, reason="bad_password") == 1
        assert sample(reg.app, dropped, reason="truncated") == 1
        _, text = await get(http, reg.http_url + "/rest/*/c/n/x")
        assert split_row(text.strip(), "/")[4] == "2"


async def test_replayed_and_late_datagrams_never_move_a_value_back(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    addr, app = registry.udp_addr, registry.app
    newer = encode("c", "n", {"x": 2}, seq=10, instance_id=5)
    send_udp(addr, encode("c", "n", {"x": 1}, seq=9, instance_id=5), newer)
    await until_received(app, 2)
    send_udp(addr, encode("c", "n", {"x": 1}, seq=9, instance_id=5), newer)  # replays
    send_udp(addr, encode("c", "n", {"x": 0}, seq=3, instance_id=5))  # late, no timestamp
    await until_received(app, 5)
    assert sample(app, "podgrid_registry_datagrams_dropped_total", reason="replay") == 3
    # another sender with an older explicit timestamp: stale, ignored
    send_udp(addr, encode("c", "n", {"x": -1}, seq=1, instance_id=6, time_s=1_000_000_000))
    await until_received(app, 6)
    assert sample(app, "podgrid_registry_values_stale_total") == 1
    _, text = await get(http, registry.http_url + "/rest/*/c/n/-60000/-1/x")
    assert [split_row(r, "/")[4] for r in text.splitlines()] == ["1", "2"]


async def test_unexpected_errors_are_logged_500s_with_a_request_id(
    tmp_path,  # type: ignore[no-untyped-def]
    http: aiohttp.ClientSession,
) -> None:
    async with run_registry(RegistrySettings(http_port=0, udp_port=0, state_dir=tmp_path)) as reg:
        store = reg.app[keys.STORE]
        store.select = None  # type: ignore[assignment,method-assign]  # break the store
        async with http.get(reg.http_url + "/rest/*/*/*/x") as resp:
            assert resp.status == 500
            body = await resp.json()
        assert body["error"] == "internal_error"
        assert body["request_id"] == resp.headers["X-Request-Id"]


async def test_healthz_reports_farm_series_and_longpoll(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    send_udp(registry.udp_addr, encode("PoD_Masters", "42", SERVER))
    await until_received(registry.app, 1)
    async with http.get(registry.http_url + "/healthz") as resp:
        doc = await resp.json()
    capacity = {k: doc.pop(k) for k in ("waiters", "max_waiters", "connections", "fd_budget")}
    assert doc == {
        "status": "ok",
        "farm": "testfarm",
        "series": 2,
        "longpoll": True,
        "max_wait_s": 60.0,
    }
    assert capacity["waiters"] == 0
    assert 0 < capacity["max_waiters"] < capacity["fd_budget"]
    assert capacity["connections"] >= 1  # this one


async def test_dashboard_page_and_static_files_are_served(
    registry: RunningRegistry, http: aiohttp.ClientSession
) -> None:
    async with http.get(registry.http_url + "/") as resp:
        assert resp.status == 200
        assert "<html" in (await resp.text()).lower()
    async with http.get(registry.http_url + "/static/index.html") as resp:
        assert resp.status == 200
    for bad in ("/static/..%2Fservice.py", "/static/.hidden", "/static/nope.js"):
        async with http.get(registry.http_url + bad) as resp:
            assert resp.status == 404, bad


async def test_series_past_ttl_disappear_from_answers_and_health(
    tmp_path,  # type: ignore[no-untyped-def]
    http: aiohttp.ClientSession,
) -> None:
    settings = RegistrySettings(http_port=0, udp_port=0, series_ttl_s=0.3, state_dir=tmp_path)
    async with run_registry(settings) as reg:
        send_udp(reg.udp_addr, encode("PoD_Masters", "42", SERVER))
        await until_received(reg.app, 1)
        _, text = await get(http, reg.http_url + DONE_WHEN_QUERY)
        assert len(text.splitlines()) == 2
        await asyncio.sleep(0.6)
        _, text = await get(http, reg.http_url + DONE_WHEN_QUERY)
        assert text == ""
        async with http.get(reg.http_url + "/healthz") as resp:
            assert (await resp.json())["series"] == 0  # swept, not just hidden
