"""Publish of a new server → first agent attach request, with long-poll and with plain polling.

Run: ``.venv/bin/python benchmarks/agent_attach.py [--trials N] [--agents K]``. Real registry
and master queue on loopback, K real ``podgrid jobagent run`` processes per mode (y = 1 s,
x = 1 h so they only poll). Each trial makes a real request in the master queue whose broker
report names a recording attach endpoint (agents attach only where the master queue vouches),
then publishes it (as a broker does); the time from the publish to the first
``POST /v1/attach`` is measured there, so it includes the agent's vouch look-up. The
endpoint answers 409 ``closed`` so the agents go back to polling. A second section compares a
``dask worker`` subprocess with an in-process ``distributed.Worker`` joining a running
scheduler (the cost the agent pays after a grant). Figures are printed (p50 / p90 over
trials); nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from podgrid.config import setup_logging
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import ConnectionInfo
from tests.jobagent.grid import Grid, eventually, ldif_with, running_grid

SITE, CE = "Bench", "bench-ce"


class AttachRecorder:
    """A loopback ``/v1/attach`` that notes when each server's first request arrives."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{server}/v1/attach", self.attach)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def attach(self, request: web.Request) -> web.Response:
        self.first.setdefault(request.match_info["server"], time.monotonic())
        return web.json_response({"reason": "closed", "message": "benchmark"}, status=409)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


REQUEST = '[server]\nname = "bench"\nmin_workers = 1\nmax_workers = 1\n'


async def vouched_server(grid: Grid, recorder: AttachRecorder) -> str:
    """A real request the master queue vouches for, its broker reporting the recorder's URL."""
    record = await grid.user.submit_request(REQUEST, "toml")
    server = str(record.id)
    token = await grid.admin.create_token("broker", f"bench-broker-{server}", record.id)
    url = f"{recorder.url}/{server}/v1/attach"
    async with MasterQueueClient(grid.mq_url, token) as broker:
        await broker.report_state(record.id, "STARTING")
        info = ConnectionInfo(address="tls://127.0.0.1:1", attach_url=url)
        await broker.report_state(record.id, "PUBLISHING", address=url, connection=info)
    return server


async def trial(grid: Grid, recorder: AttachRecorder) -> float:
    """Seconds from the publish of a new server to its first attach request."""
    server = await vouched_server(grid, recorder)
    published = time.monotonic()
    await grid.publish_server(server, f"{recorder.url}/{server}/v1/attach", 1)
    await eventually(lambda: server in recorder.first, 10, f"an attach to {server}", step_s=0.01)
    took = recorder.first[server] - published
    await grid.publish_server(server, f"{recorder.url}/{server}/v1/attach", 0)
    return took


async def measure(mode: str, trials: int, agents: int, tmp: Path) -> list[float]:
    config = ldif_with(tmp / "c.ldif", SITE, CE, podPollDuration=3600, podPollInterval=1)
    extra = ("--slot-ttl", "3600") + (("--no-longpoll",) if mode == "plain" else ())
    recorder = AttachRecorder()
    await recorder.start()
    try:
        async with running_grid(tmp) as grid:
            procs = [
                grid.start_agent(f"{mode}{i}", config, *extra, site=SITE, ce=CE)
                for i in range(agents)
            ]
            await eventually(lambda: all(p.state == "POLLING" for p in procs), 60, "agents up")
            await asyncio.sleep(1.5)
            results = []
            for n in range(trials):
                results.append(await trial(grid, recorder))
                await asyncio.sleep(0.3 + (n % 7) / 10)  # decorrelate from the 1 s poll phase
            return results
    finally:
        await recorder.stop()


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


async def until(check: Callable[[], bool]) -> None:
    """Wait (5 ms steps) until ``check()``: the scheduler offers no event for "worker joined"."""
    await eventually(check, 60, "the scheduler's worker set to change", step_s=0.005)


async def worker_startup(repeats: int) -> tuple[list[float], list[float]]:
    """Seconds until a scheduler sees a new worker: subprocess vs in-process."""
    from distributed import Scheduler, Worker

    sub, inproc = [], []
    async with Scheduler(host="127.0.0.1", port=0, dashboard=False) as scheduler:
        for _ in range(repeats):
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                scheduler.address,
                "--no-nanny",
                "--no-dashboard",
                "--nthreads",
                "1",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            await until(lambda: bool(scheduler.workers))
            sub.append(time.monotonic() - started)
            proc.terminate()
            await proc.wait()
            await until(lambda: not scheduler.workers)
            started = time.monotonic()
            async with Worker(scheduler.address, nthreads=1, dashboard=False):
                await until(lambda: bool(scheduler.workers))
                inproc.append(time.monotonic() - started)
            await until(lambda: not scheduler.workers)
    return sub, inproc


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--worker-repeats", type=int, default=5)
    args = parser.parse_args()
    setup_logging("console", "WARNING")
    print(f"publish → first attach request, {args.agents} agent(s), y = 1 s, {args.trials} trials")
    for mode in ("longpoll", "plain"):
        with tempfile.TemporaryDirectory(prefix="podgrid-bench-") as tmp:
            values = await measure(mode, args.trials, args.agents, Path(tmp))
        target = "   (target < 200 ms)" if mode == "longpoll" else ""
        print(f"  {mode:9s} {summary(values)}{target}")
    sub, inproc = await worker_startup(args.worker_repeats)
    print(f"worker joins a running scheduler ({args.worker_repeats} repeats)")
    print(f"  subprocess {summary(sub)}")
    print(f"  in-process {summary(inproc)}")


if __name__ == "__main__":
    asyncio.run(main())
