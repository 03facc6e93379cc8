"""Agents as real processes against a real registry and master queue: the batch fallback."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

from tests.harness.ports import free_port
from tests.jobagent.grid import eventually, ldif_with, running_grid

SITE, CE = "TestSite", "test-ce"


def gone(pid: int) -> bool:
    """Dead (a zombie waiting for a reaper that is not us counts as dead)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_no_server_within_x_runs_batch_job_to_done(tmp_path: Path) -> None:
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=1, podPollInterval=1)
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job("python3", "-c", "print('hello from the sandbox')")
        started = time.monotonic()
        agent = grid.start_agent("a1", config, "--slot-ttl", "600", site=SITE, ce=CE)

        async def done() -> bool:
            return await grid.job_state(job) == "DONE"

        await eventually(done, 20, "the batch job DONE")
        took = time.monotonic() - started
        assert took >= 1.0, "the agent must poll for x = 1 s before falling back"
        sandbox = next((agent.state_dir / "sandboxes").glob(f"job-{job}-*"))
        assert (sandbox / "stdout.txt").read_text() == "hello from the sandbox\n"
        assert agent.stop() == 0
        windows = agent.events("jobagent.exited")[0]["tally"]["windows"]
        assert windows >= 1


async def test_sigterm_during_batch_kills_job_group_after_grace_and_releases(
    tmp_path: Path,
) -> None:
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=0, podPollInterval=1)
    script = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True); time.sleep(300)"
    )
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job("python3", "-c", script)
        agent = grid.start_agent(
            "t1", config, "--slot-ttl", "600", "--grace", "1", site=SITE, ce=CE
        )
        await eventually(lambda: agent.state == "BATCH", 20, "the agent in BATCH")
        sandbox = next((agent.state_dir / "sandboxes").glob(f"job-{job}-*"))
        out = sandbox / "stdout.txt"
        await eventually(lambda: out.exists() and out.read_text().strip() != "", 10, "job output")
        grandchild = int(out.read_text().split()[0])
        job_pid = agent.events("jobagent.batch_started")[0]["pid"]
        started = time.monotonic()
        agent.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(agent.process.wait, 20)
        took = time.monotonic() - started
        assert code == 0
        assert 1.0 <= took < 6, f"grace 1 s, exit after {took:.2f}s"
        for pid in (job_pid, grandchild):
            assert gone(pid), f"process {pid} of the job survived"
        record = await grid.user.get_job(job)
        assert str(record.state) == "WAITING", "an operator's SIGTERM is not the job's failure"
        assert record.exit_code is None
        assert "agent shut down" in str(record.history[-1].reason)
        assert agent.status()["params"]["State"] == "EXITING"


async def test_fallback_exit_ends_the_agent_after_x(tmp_path: Path) -> None:
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=1, podFallback="exit")
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job("true")
        agent = grid.start_agent("e1", config, "--slot-ttl", "600", site=SITE, ce=CE)
        code = await asyncio.to_thread(agent.process.wait, 30)
        assert code == 0
        assert agent.events("jobagent.exited")[0]["reason"] == "fallback_exit"
        assert await grid.job_state(job) == "WAITING", "exit fallback must not take batch work"


async def test_agent_publishes_state_and_serves_metrics(tmp_path: Path) -> None:
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=1, podPublishInterval=1)
    async with running_grid(tmp_path) as grid:
        agent = grid.start_agent(
            "m1", config, "--slot-ttl", "600", "--http", "127.0.0.1:0", site=SITE, ce=CE
        )

        async def published() -> bool:
            rows = await grid.registry.query(f"*/PoD_Agents_{SITE}/m1/State|RemainingTTL")
            return len(rows) == 2

        await eventually(published, 30, "the agent's state in the registry")
        rows = {
            r.parameter: r.value for r in await grid.registry.query(f"*/PoD_Agents_{SITE}/m1/*")
        }
        assert rows["State"] == "POLLING"
        assert 500 < int(rows["RemainingTTL"]) <= 600
        await eventually(lambda: "http_url" in agent.status(), 10, "the agent's HTTP URL")
        url = agent.status()["http_url"]
        await asyncio.sleep(1.2)
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            async with session.get(url + "/healthz") as resp:
                health = await resp.json()
        metric = 'podgrid_jobagent_seconds_total{activity="polling"}'
        polling = [line for line in text.splitlines() if line.startswith(metric)]
        assert polling
        assert float(polling[0].split()[-1]) > 0.5
        assert health["params"]["State"] == "POLLING"
        assert health["agent_id"] == "m1"


async def test_masterqueue_down_backs_off_instead_of_spinning(tmp_path: Path) -> None:
    hits: list[float] = []

    async def broken(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=0, podPollInterval=1)
    try:
        async with running_grid(tmp_path) as grid:
            grid.mq_url = f"http://127.0.0.1:{port}"
            agent = grid.start_agent("d1", config, "--slot-ttl", "600", site=SITE, ce=CE)
            await eventually(lambda: len(hits) >= 1, 30, "the first match attempt")
            await asyncio.sleep(6)
            assert agent.process.poll() is None, "an unreachable master queue is no reason to die"
            window = [t for t in hits if t - hits[0] <= 6]
            # x = 0 and no server: without back-off this would be hundreds of calls.
            assert 2 <= len(window) <= 8, f"{len(window)} match calls in 6 s"
            assert agent.stop() == 0
    finally:
        await runner.cleanup()
