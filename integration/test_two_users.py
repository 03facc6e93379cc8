"""Two users, two concurrent clusters and batch work on one real grid (MariaDB, slapd, processes).

Alice and Bob each ask for a one-worker cluster at the same time; three agents poll: one
attaches to each cluster, the third falls back to the batch jobs both users submitted. Each
user lists, reads and connects to their own cluster only: the other's request is 404 through
every call, and the own certificate does not open the other's scheduler. While it runs, the
registry's dashboard is screenshotted in headless Chromium and its numbers are checked against
the registry's REST answers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from distributed import Client

from integration.dashboard import as_shown, screenshot_dashboard
from integration.realgrid import RealGrid, eventually, real_grid
from podgrid import PodGrid
from podgrid.errors import NotFound
from podgrid.protocol import JobSpec
from tests.harness.mariadb import MariaDB

CONFIG = {"podPollDuration": 3, "podPollInterval": 1}
AGENT_FLAGS = ("--slot-ttl", "900", "--cores", "1", "--memory", "2048")


def request(name: str) -> str:
    """A one-worker cluster request."""
    return (
        f'[server]\nname = "{name}"\nmin_workers = 1\nmax_workers = 1\nmax_wait = "5m"\n'
        'ttl = "1h"\n[worker]\ncores = 1\nmemory = "512MiB"\n'
    )


async def _client_error(address: str, security: object) -> BaseException | None:
    client = Client(address, security=security, asynchronous=True, timeout="5s")
    try:
        await client
    except (OSError, TimeoutError) as e:
        return e
    finally:
        await client.close()
    return None


async def _worker_names(address: str, security: object) -> set[str]:
    async with Client(address, security=security, asynchronous=True, timeout="20s") as client:
        assert await client.submit(sum, [1, 2, 3]) == 6
        info = await client.scheduler.identity()
        return {str(w["name"]) for w in info["workers"].values()}


async def _both_ready(grid: RealGrid, users: dict[str, PodGrid], ids: dict[str, int]) -> None:
    for name, pod in users.items():
        await pod.wait_ready(ids[name], timeout_s=120)


async def test_two_users_each_see_and_connect_to_their_own_cluster_only(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    async with real_grid(tmp_path, mariadb, config=CONFIG) as grid:
        tokens = {u: await grid.token("user", u) for u in ("alice", "bob")}
        async with contextlib.AsyncExitStack() as stack:
            users = {
                u: PodGrid(await stack.enter_async_context(grid.client(t)))
                for u, t in tokens.items()
            }
            ids = {u: (await users[u].submit_text(request(f"{u}-scan"))).id for u in users}
            agents = [grid.start_agent(f"ag{i}", *AGENT_FLAGS) for i in range(3)]
            await _both_ready(grid, users, ids)
            # Batch work once both clusters have their worker: only the third agent is free.
            jobs = {
                u: (await users[u].client.submit_job(JobSpec(command=["true"], ttl_s=60))).id
                for u in users
            }

            async def jobs_done() -> bool:
                for u, pod in users.items():
                    if (await pod.client.get_job(jobs[u])).state != "DONE":
                        return False
                return True

            await eventually(jobs_done, 90, "both users' batch jobs DONE")

            details = {u: await users[u].request(ids[u]) for u in users}
            workers = {u: {w.agent_id for w in details[u].workers} for u in users}
            assert all(len(w) == 1 for w in workers.values()), workers
            assert workers["alice"].isdisjoint(workers["bob"]), "one agent per cluster"
            batch_runner = {a.agent_id for a in agents} - workers["alice"] - workers["bob"]
            for u in users:
                job = await users[u].client.get_job(jobs[u])
                assert {job.agent_id} == batch_runner, "a worker must not run batch jobs"

            for me, other in (("alice", "bob"), ("bob", "alice")):
                pod = users[me]
                assert [r.id for r in await pod.requests()] == [ids[me]]
                assert [j.id for j in await pod.jobs()] == [jobs[me]]
                for call in (
                    pod.request(ids[other]),
                    pod.connection(ids[other]),
                    pod.cancel(ids[other]),
                    pod.client.get_job(jobs[other]),
                ):
                    with pytest.raises(NotFound):
                        await call
            conns = {u: await users[u].connection(ids[u]) for u in users}
            for me, other in (("alice", "bob"), ("bob", "alice")):
                names = await _worker_names(conns[me].address, conns[me].security())
                assert names == {w.name for w in details[me].workers}
                refused = await _client_error(conns[other].address, conns[me].security())
                assert isinstance(refused, OSError), f"{me} got into {other}'s cluster"

            # A batch job running while the page is looked at: the queue and BATCH show it.
            long_job = await users["alice"].client.submit_job(
                JobSpec(command=["sleep", "60"], ttl_s=120)
            )

            async def running() -> bool:
                return (await users["alice"].client.get_job(long_job.id)).state == "RUNNING"

            await eventually(running, 60, "alice's long batch job RUNNING")
            shot = tmp_path / "dashboard.png"
            shown, rest = await screenshot_dashboard(grid.registry_url, shot)
            print(f"dashboard screenshot: {shot}")
            assert shot.stat().st_size > 10_000
            assert shown == as_shown(rest), (shown, rest)
            assert set(rest["servers"]) == {str(ids["alice"]), str(ids["bob"])}
            for u in users:
                assert rest["servers"][str(ids[u])]["attached"] == "1"
                assert rest["servers"][str(ids[u])]["needed"] == "0"
            assert rest["agents"]["WORKER"] == 2
            assert rest["agents"]["BATCH"] == 1
            assert rest["queue"] == {"waiting": "0", "running": "1"}
            await users["alice"].client.kill_job(long_job.id)

            for u in users:
                await users[u].cancel(ids[u])
            for u in users:
                assert (await users[u].request(ids[u])).state == "CANCELLED"
