"""The registry's dashboard in a real headless Chromium (Playwright), checked against ``/rest``.

Playwright drives the Chromium that ``.ci/setup`` installs from Debian (``/usr/bin/chromium``,
passed as ``executable_path``), so no browser build is downloaded. It waits for the page's
own refreshes, reads the numbers it shows and takes a full-page screenshot.

The page polls while the grid moves, so a snapshot is compared only when the registry's
answers are the same just before the page's refresh and just after the screenshot; the page
fetched between the two, so it must show exactly those numbers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, async_playwright

from integration.realgrid import SITE

AGENT_STATES = ("POLLING", "ATTACHING", "WORKER", "BATCH", "EXITING")
MISSING = "\N{EN DASH}"  # what the page shows for a value not published
SNAPSHOT_ATTEMPTS = 10
PAGE_TIMEOUT_MS = 30_000
Numbers = dict[str, Any]


def chromium() -> str:
    """The system Chromium (Debian's package; .ci/setup installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is needed: apt-get install -y chromium (.ci/setup does)"
    return found


async def rest_numbers(registry_url: str) -> Numbers:
    """What the dashboard should show, from the registry's own REST answers."""
    async with aiohttp.ClientSession() as http:

        async def rows(path: str) -> list[dict[str, Any]]:
            url = f"{registry_url}/rest/{path}?Accept=application/json"
            async with http.get(url) as resp:
                assert resp.status == 200, await resp.text()
                return list((await resp.json())["results"])

        servers: dict[str, dict[str, str]] = {}
        for r in await rows("*/PoD_Masters/*/NeededWorkers|Workers|State"):
            servers.setdefault(str(r["node"]), {})[str(r["parameter"])] = str(r["value"])
        agents = {s: 0 for s in (*AGENT_STATES, "other")}
        for r in await rows(f"*/PoD_Agents_{SITE}/*/State"):
            state = str(r["value"]) if str(r["value"]) in AGENT_STATES else "other"
            agents[state] += 1
        queue = {str(r["parameter"]): str(r["value"]) for r in await rows(
            "*/PoD_MasterQueue/batch/WaitingJobs|RunningJobs"
        )}  # fmt: skip
    return {
        "servers": {
            node: {
                "needed": p.get("NeededWorkers", MISSING),
                "attached": p.get("Workers", MISSING),
                "state": p.get("State", MISSING),
            }
            for node, p in servers.items()
        },
        "agents": agents,
        "queue": {
            "waiting": queue.get("WaitingJobs", MISSING),
            "running": queue.get("RunningJobs", MISSING),
        },
    }


PAGE_NUMBERS_JS = """(site) => {
  const text = (root, sel) => {
    const e = root.querySelector(sel);
    return e ? e.textContent : null;
  };
  const servers = {};
  for (const row of document.querySelectorAll("tr[data-server]")) {
    servers[row.dataset.server] = {
      needed: text(row, '[data-field="needed"]'),
      attached: text(row, '[data-field="attached"]'),
      state: text(row, '[data-field="state"]'),
    };
  }
  const agents = {};
  const siteRow = document.querySelector(`tr[data-site="${site}"]`);
  for (const cell of siteRow ? siteRow.querySelectorAll("[data-state]") : []) {
    agents[cell.dataset.state] = Number(cell.textContent);
  }
  const queue = document.getElementById("batch-queue");
  return {
    servers,
    agents,
    queue: queue.hidden ? null : {
      waiting: text(queue, '[data-field="waiting"]'),
      running: text(queue, '[data-field="running"]'),
    },
    banner: document.getElementById("error-banner").hidden ? null
      : document.getElementById("error-banner").textContent,
  };
}"""


async def _next_refresh(page: Page) -> None:
    stamp = await page.eval_on_selector("#last-updated", "e => e.dateTime")
    await page.wait_for_function(
        "(t) => { const e = document.getElementById('last-updated');"
        " return e.dataset.state === 'ok' && e.dateTime !== t; }",
        arg=stamp,
        timeout=PAGE_TIMEOUT_MS,
    )


async def screenshot_dashboard(registry_url: str, path: Path) -> tuple[Numbers, Numbers]:
    """Screenshot the dashboard to ``path``; the numbers it showed and the registry's.

    Retries until the registry's answers did not move around the page's refresh.
    """
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(registry_url + "/", timeout=PAGE_TIMEOUT_MS)
            shown: Numbers = {}
            rest: Numbers = {}
            for _ in range(SNAPSHOT_ATTEMPTS):
                before = await rest_numbers(registry_url)
                await _next_refresh(page)
                await _next_refresh(page)  # this refresh began after ``before``
                shown = await page.evaluate(PAGE_NUMBERS_JS, SITE)
                await page.screenshot(path=str(path), full_page=True)
                rest = await rest_numbers(registry_url)
                if rest == before:
                    break
            return shown, rest
        finally:
            await browser.close()


def as_shown(rest: Numbers) -> Numbers:
    """The registry's numbers the way the page prints them."""
    return {
        "servers": rest["servers"],
        "agents": rest["agents"],
        "queue": rest["queue"],
        "banner": None,
    }
