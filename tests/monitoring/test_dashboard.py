"""The dashboard page, rendered by a real headless Chromium against a real registry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import web

from podgrid.monitoring.client import (
    ApMonPublisher,
    HttpPublisher,
    PublishItem,
    RegistryClient,
    Sample,
    rest_path,
    wait_for,
)
from podgrid.monitoring.service import RunningRegistry, run_registry
from podgrid.monitoring.settings import RegistrySettings
from tests.monitoring.registry_helpers import TOKEN

STATIC_DIR = Path(__file__).parents[2] / "monitoring" / "static"
CHROMIUM_TIMEOUT_S = 60
VOID_TAGS = {"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "source", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text for c in self.children)

    def find_all(self, pred: Callable[[Element], bool]) -> list[Element]:
        found = [self] if pred(self) else []
        for c in self.children:
            found += c.find_all(pred)
        return found

    def one(self, **attrs: str) -> Element:
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        hits = self.find_all(lambda e: all(e.attrs.get(k) == v for k, v in want.items()))
        assert len(hits) == 1, f"expected one element with {want}, found {len(hits)}"
        return hits[0]


class TreeBuilder(HTMLParser):
    """Enough of a DOM to find elements by attribute in Chromium's --dump-dom output."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in VOID_TAGS:
            self.stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].texts.append(data)


def parse_dom(html: str) -> Element:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "Chromium is needed for the dashboard test and was not found on PATH: "
            "install it with `apt-get install -y chromium` (.ci/run does)."
        )
    return found


async def run_chromium(url: str, tmp_path: Path, *mode: str) -> str:
    """Load ``url`` in headless Chromium for 5 s of virtual time; return its stdout."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    proc = await asyncio.create_subprocess_exec(
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--window-size=1280,800",
        *mode,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: we can stop all its helpers
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHROMIUM_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err.decode()[-2000:]}"
    return out.decode()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RunningRegistry]:
    settings = RegistrySettings(http_port=0, udp_port=0, state_dir=tmp_path)
    async with run_registry(settings) as running:
        yield running


async def publish_grid(registry: RunningRegistry) -> None:
    expires_s = int(time.time()) + 3600
    async with ApMonPublisher(*registry.udp_addr) as pub:
        await pub.send(
            "PoD_Masters",
            "req-17",
            {
                "Address": "http://127.0.0.1:9000/attach",
                "NeededWorkers": 3,
                "Workers": 2,
                "MinWorkers": 2,
                "MaxWorkers": 8,
                "State": "PUBLISHING",
                "Owner": "<b>alice</b>",
                "Expires": expires_s,
            },
        )
        await pub.send("PoD_Agents_CERN", "agent-1", {"State": "POLLING"})
        await pub.send("PoD_Agents_CERN", "agent-2", {"State": "WORKER", "Server": "req-17"})
        await pub.send("PoD_Agents_GSI", "agent-3", {"State": "BATCH"})
        await pub.send("PoD_MasterQueue", "batch", {"WaitingJobs": 17, "RunningJobs": 4})
    async with RegistryClient(registry.http_url) as client:
        await wait_for(client, rest_path("PoD_MasterQueue", "RunningJobs"), timeout_s=5)


async def test_dashboard_shows_servers_agents_and_queue(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    await publish_grid(registry)
    dom = parse_dom(await run_chromium(registry.http_url + "/", tmp_path, "--dump-dom"))

    server = dom.one(data_server="req-17")
    assert server.one(data_field="state").text == "PUBLISHING"
    assert server.one(data_field="needed").text == "3"
    assert server.one(data_field="attached").text == "2"
    assert server.one(data_field="wanted").text == "5"
    assert (server.one(data_field="min").text, server.one(data_field="max").text) == ("2", "8")
    assert server.one(data_field="address").text == "http://127.0.0.1:9000/attach"
    assert server.one(data_field="expires").text.startswith("in ")
    owner = server.one(data_field="owner")
    assert owner.text == "<b>alice</b>", "data is shown as text"
    assert owner.children == [], "data is never parsed as markup"

    cern = dom.one(data_site="CERN")
    assert cern.one(data_state="POLLING").text == "1"
    assert cern.one(data_state="WORKER").text == "1"
    assert cern.one(data_field="total").text == "2"
    assert dom.one(data_site="GSI").one(data_state="BATCH").text == "1"

    queue = dom.one(id="batch-queue")
    assert "hidden" not in queue.attrs
    assert queue.one(data_field="waiting").text == "17"
    assert queue.one(data_field="running").text == "4"
    assert "hidden" in dom.one(id="error-banner").attrs
    assert dom.one(id="last-updated").attrs["data-state"] == "ok"


async def test_dashboard_without_data_hides_queue(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    dom = parse_dom(await run_chromium(registry.http_url + "/", tmp_path, "--dump-dom"))
    assert dom.one(id="servers").find_all(lambda e: "data-server" in e.attrs) == []
    assert "hidden" not in dom.one(id="servers-empty").attrs
    assert "hidden" in dom.one(id="batch-queue").attrs
    assert dom.one(id="last-updated").attrs["data-state"] == "ok"


async def test_dashboard_shows_an_error_banner_when_queries_fail(tmp_path: Path) -> None:
    # The page served without a registry behind it: every /rest fetch answers 404.
    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static", STATIC_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        dom = parse_dom(await run_chromium(f"http://{host}:{port}/", tmp_path, "--dump-dom"))
    finally:
        await runner.cleanup()
    banner = dom.one(id="error-banner")
    assert "hidden" not in banner.attrs
    assert "HTTP 404" in banner.text
    assert dom.one(id="last-updated").attrs["data-state"] == "never"


async def publish_history(registry: RunningRegistry, now_ms: int) -> None:
    """Four minutes of a small grid, stamped in the past over HTTP (explicit time_ms)."""
    minute = 60_000

    def at(k: int) -> int:
        return now_ms - (4 - k) * minute

    items = [
        PublishItem("PoD_MasterQueue", "batch", {"WaitingJobs": w, "RunningJobs": r}, at(k))
        for k, (w, r) in enumerate([(5, 0), (9, 1), (12, 3), (17, 4)])
    ]
    items += [
        PublishItem("PoD_Masters", "req-1", {"NeededWorkers": n, "Workers": a}, at(k))
        for k, (n, a) in enumerate([(4, 0), (3, 1), (2, 2), (2, 2)])
    ]
    items += [
        PublishItem("PoD_Masters", "req-2", {"NeededWorkers": 6, "Workers": 0}, at(2)),
        PublishItem("PoD_Agents_CERN", "a1", {"State": "POLLING"}, at(0)),
        PublishItem("PoD_Agents_CERN", "a1", {"State": "WORKER"}, at(2)),
        PublishItem("PoD_Agents_CERN", "a2", {"State": "POLLING"}, at(0)),
        PublishItem("PoD_Agents_GSI", "g1", {"State": "BATCH"}, at(1)),
    ]
    async with HttpPublisher(registry.http_url, TOKEN) as pub:
        for item in sorted(items, key=lambda i: i.time_ms or 0):
            await pub.publish([item])


def last_values(samples: list[Sample], param: str) -> float:
    """The sum over nodes of each node's newest ``param`` (what the plots end on)."""
    newest: dict[str, Sample] = {}
    for s in samples:
        if s.parameter == param and (
            s.node not in newest or s.timestamp_ms > newest[s.node].timestamp_ms
        ):
            newest[s.node] = s
    return sum(float(s.value) for s in newest.values())


async def test_history_plots_match_the_rest_answers_and_a_screenshot_is_taken(
    tmp_path: Path,
) -> None:
    settings = RegistrySettings(
        http_port=0, udp_port=0, publish_tokens=frozenset({TOKEN}), state_dir=tmp_path
    )
    async with run_registry(settings) as registry:
        await publish_history(registry, int(time.time() * 1000))
        async with RegistryClient(registry.http_url) as client:
            window = "-600000/-1"
            queue = await client.query(f"*/PoD_MasterQueue/batch/{window}/WaitingJobs|RunningJobs")
            servers = await client.query(f"*/PoD_Masters/*/{window}/NeededWorkers|Workers")
        dom = parse_dom(await run_chromium(registry.http_url + "/", tmp_path, "--dump-dom"))
        shot = tmp_path / "dashboard.png"
        await run_chromium(registry.http_url + "/", tmp_path, f"--screenshot={shot}")

    def line(plot: str, series: str) -> Element:
        return dom.one(data_plot=plot).one(data_series=series)

    assert float(line("queue", "WaitingJobs").attrs["data-last"]) == last_values(
        queue, "WaitingJobs"
    )
    assert float(line("queue", "WaitingJobs").attrs["data-max"]) == 17
    assert float(line("queue", "RunningJobs").attrs["data-last"]) == 4
    # Needed vs attached, summed over the servers: req-1 (2, 2) and req-2 (6, 0) at the end.
    assert (
        float(line("servers", "NeededWorkers").attrs["data-last"])
        == last_values(servers, "NeededWorkers")
        == 8
    )
    assert float(line("servers", "Workers").attrs["data-last"]) == last_values(servers, "Workers")
    # Agents by state over time: a1 POLLING then WORKER, a2 POLLING, g1 BATCH.
    agents = dom.one(data_plot="agents")
    ends = {
        s: float(agents.one(data_series=s).attrs["data-last"])
        for s in ("POLLING", "WORKER", "BATCH")
    }
    assert ends == {"POLLING": 1, "WORKER": 1, "BATCH": 1}
    assert float(agents.one(data_series="POLLING").attrs["data-max"]) == 2
    cern = dom.one(id="site-time").one(data_time_site="CERN")
    assert cern.one(data_state="WORKER").text.endswith("%")
    assert int(cern.one(data_state="WORKER").text[:-1]) > 0
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000  # a rendered page, not a blank one
