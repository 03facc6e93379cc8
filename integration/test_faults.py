"""Faults on the real grid (MariaDB, slapd, registry, master queue, brokers, agents as processes).

Each test breaks one part and checks what must hold afterwards in the data: request and job
states, their histories, counts, the processes left. Nothing is asserted on how long it took.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from integration.realgrid import CE_DN, RealGrid, eventually, real_grid
from integration.test_agents_grid import all_dask_workers_named, broker_process
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.protocol import JobSpec
from tests.harness.mariadb import MariaDB

AGENT_FLAGS = ("--slot-ttl", "900", "--cores", "1", "--memory", "2048", "--heartbeat", "1.5")


def request(name: str, workers: int) -> str:
    """A request for exactly ``workers`` workers."""
    return (
        f'[server]\nname = "{name}"\nmin_workers = {workers}\nmax_workers = {workers}\n'
        'max_wait = "5m"\nttl = "1h"\n[worker]\ncores = 1\nmemory = "512MiB"\n'
    )


async def job_state(user: MasterQueueClient, job_id: int) -> str:
    """The job's state as the master queue has it."""
    return str((await user.get_job(job_id)).state)


async def until_job(user: MasterQueueClient, job_id: int, state: str, timeout_s: float) -> None:
    """Wait for the job to reach ``state``."""

    async def reached() -> bool:
        return await job_state(user, job_id) == state

    await eventually(reached, timeout_s, f"job {job_id} {state}")


async def test_sigkill_of_a_broker_fails_its_request_and_frees_its_agents(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    config = {"podPollDuration": 4, "podPollInterval": 1}
    async with (
        real_grid(tmp_path, mariadb, config=config) as grid,
        grid.client(await grid.token("user", "alice")) as alice,
    ):
        record = await alice.submit_request(request("doomed", 2), "toml")
        agents = [grid.start_agent(f"k{i}", *AGENT_FLAGS) for i in range(2)]

        async def ready() -> bool:
            return (await alice.get_request(record.id)).state in ("READY", "FULL")

        await eventually(ready, 90, "the cluster READY with both agents")
        await eventually(
            lambda: all(a.events("jobagent.attached") for a in agents), 30, "both attached"
        )
        names = {a.status()["last_worker"]["name"] for a in agents}
        assert len(all_dask_workers_named(names, tmp_path)) == 2

        broker_process(record.id).send_signal(signal.SIGKILL)

        async def failed() -> bool:
            return (await alice.get_request(record.id)).state == "FAILED"

        await eventually(failed, 60, "the request FAILED")
        detail = await alice.get_request(record.id)
        last = detail.timeline[-1]
        assert last.state == "FAILED"
        assert last.reason, detail.timeline
        assert "broker" in last.reason.lower(), last.reason
        await eventually(
            lambda: all(a.state in ("POLLING", "BATCH") for a in agents), 30, "agents back"
        )
        await eventually(lambda: not all_dask_workers_named(names, tmp_path), 20, "no worker left")
        for agent in agents:
            # Its worker ended once (the scheduler gone: exited, or the broker probe lost it).
            assert len(agent.events("jobagent.worker_ended")) == 1, agent.log()[-2000:]
            assert len(agent.events("jobagent.attached")) == 1
            assert agent.process.poll() is None, "agents must outlive the broker"
        # Back in business: a batch job after the crash runs on one of them.
        job = await alice.submit_job(JobSpec(command=["true"], ttl_s=60))
        await until_job(alice, job.id, "DONE", 60)
        assert (await alice.get_job(job.id)).agent_id in {a.agent_id for a in agents}


def _site_agent(site_pid: int) -> psutil.Process:
    """The one ``jobagent run`` process a site factory keeps."""
    found = [
        p
        for p in psutil.Process(site_pid).children()
        if "jobagent" in p.cmdline() and "run" in p.cmdline()
    ]
    assert len(found) == 1, found
    return found[0]


async def test_sigkill_of_an_agent_during_a_batch_job_runs_it_once_more_and_replaces_it(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    config = {"podPollDuration": 1, "podPollInterval": 1}
    async with real_grid(
        tmp_path, mariadb, config=config, lease_s=4.0, sweep_interval_s=0.5
    ) as grid:
        runs = tmp_path / "runs.txt"
        me = "$PODGRID_AGENT_ID"
        script = f'echo "start {me}" >> {runs}; sleep 4; echo "end {me}" >> {runs}'
        async with grid.client(await grid.token("user", "alice")) as alice:
            job = await alice.submit_job(
                JobSpec(command=["sh", "-c", script], ttl_s=120, max_attempts=3)
            )
            site = grid.start_site("one", 1, "--grace", "2", "--slot-ttl", "900")
            await until_job(alice, job.id, "RUNNING", 90)
            await eventually(lambda: runs.exists(), 30, "the first run started")
            victim = _site_agent(site.pid)
            victim.send_signal(signal.SIGKILL)
            await until_job(alice, job.id, "DONE", 120)

            final = await alice.get_job(job.id)
            assert final.attempts == 2
            events = (await alice.get_job(job.id)).history
            states = [e.state for e in events]
            assert states.count("DONE") == 1
            assert states.count("ASSIGNED") == 2
            lost = [e for e in events if e.state == "WAITING" and e.reason != "submitted"]
            assert lost, events
            assert "lease" in str(lost[0].reason).lower(), events
            first, second = [e.agent_id for e in events if e.state == "ASSIGNED"]
            assert first != second
            assert final.agent_id == second
            lines = runs.read_text().splitlines()
            # The first run died with its agent (no "end"); the second ran to the end.
            assert lines == [f"start {first}", f"start {second}", f"end {second}"], lines

            def replaced() -> bool:
                doc = json.loads((tmp_path / "sites" / "one" / "site.json").read_text())
                return int(doc["started"]) == 2 and len(doc["exits"]) == 1

            await eventually(replaced, 30, "the factory replacing the agent")
            doc = json.loads((tmp_path / "sites" / "one" / "site.json").read_text())
            assert doc["exits"][0][0] == first
            assert _site_agent(site.pid).pid != victim.pid


async def test_registry_restart_under_a_publishing_broker(tmp_path: Path, mariadb: MariaDB) -> None:
    config = {"podPollDuration": 120, "podPollInterval": 1}
    async with (
        real_grid(tmp_path, mariadb, config=config) as grid,
        grid.client(await grid.token("user", "alice")) as alice,
    ):
        record = await alice.submit_request(request("through-restart", 1), "toml")
        path = f"*/PoD_Masters/{record.id}/NeededWorkers/1:"

        async def published() -> bool:
            async with grid.registry_client() as registry:
                return bool(await registry.query(path))

        await eventually(published, 60, "the broker publishing before the restart")
        broker = broker_process(record.id)
        assert grid.registry.stop() == 0
        # An agent comes while the registry is away; it can only find the server in the
        # registry that comes back, empty, and holds only what the broker re-publishes.
        agent = grid.start_agent("late", *AGENT_FLAGS)
        await eventually(lambda: agent.state == "POLLING", 60, "the agent polling")
        grid.registry.start()
        await eventually(published, 30, "the broker re-publishing to the new registry")

        async def ready() -> bool:
            return (await alice.get_request(record.id)).state in ("READY", "FULL")

        await eventually(ready, 60, "the agent attaching after the restart")
        detail = await alice.get_request(record.id)
        assert [w.agent_id for w in detail.workers] == ["late"]
        assert broker.is_running()
        assert broker.pid == broker_process(record.id).pid
        assert len(agent.events("jobagent.attached")) == 1

        async def counted() -> bool:
            async with grid.registry_client() as registry:
                rows = await registry.query(f"*/PoD_Masters/{record.id}/Workers")
                return [r.value for r in rows] == [1]

        await eventually(counted, 30, "the new registry counting the worker")


def _runs(path: Path) -> collections.Counter[int]:
    return (
        collections.Counter(int(x) for x in path.read_text().split())
        if path.exists()
        else collections.Counter()
    )


async def test_mariadb_restart_under_submissions_and_matches_loses_and_duplicates_nothing(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    if os.environ.get("PODGRID_TEST_MYSQL_URL"):
        pytest.skip("restarts the throw-away MariaDB; an external server is not ours to restart")
    n_jobs, n_requests = 60, 12
    config = {"podPollDuration": 1, "podPollInterval": 1}
    runs = tmp_path / "runs.txt"
    async with real_grid(tmp_path, mariadb, config=config, launcher="none") as grid:
        agents = [grid.start_agent(f"m{i}", *AGENT_FLAGS) for i in range(2)]
        async with grid.client(await grid.token("user", "alice")) as alice:
            jobs: dict[int, int] = {}
            requests: dict[int, int] = {}
            third = asyncio.Event()

            async def submit(i: int) -> None:
                if i % 6 == 5 and len(requests) < n_requests:
                    rec = await alice.submit_request(
                        request(f"r{i}", 1), "toml", idempotency_key=f"req-{i}"
                    )
                    requests[i] = rec.id
                    return
                cmd = ["sh", "-c", f'echo "$PODGRID_JOB_ID" >> {runs}']
                j = await alice.submit_job(
                    JobSpec(command=cmd, ttl_s=60), idempotency_key=f"job-{i}"
                )
                jobs[i] = j.id

            async def submitter(items: list[int]) -> None:
                for i in items:
                    await submit(i)
                    if len(jobs) + len(requests) >= (n_jobs + n_requests) // 3:
                        third.set()
                    await asyncio.sleep(0.05)

            total = n_jobs + n_requests
            tasks = [asyncio.create_task(submitter(list(range(k, total, 3)))) for k in range(3)]
            await third.wait()
            mq_pid = grid.mq.pid
            await asyncio.to_thread(mariadb.restart)
            await asyncio.gather(*tasks)
            assert len(jobs) + len(requests) == total
            # Every client repeats every submission with its key: nothing new is created.
            again_jobs = dict(jobs)
            again_requests = dict(requests)
            jobs.clear()
            requests.clear()
            for i in range(total):
                await submit(i)
            assert (jobs, requests) == (again_jobs, again_requests)

            async def all_done() -> bool:
                listed = [j async for j in alice.list_jobs()]
                return len(listed) == len(jobs) and all(j.state == "DONE" for j in listed)

            await eventually(all_done, 180, "every job DONE")
            listed_requests = [r async for r in alice.list_requests()]
            assert sorted(r.id for r in listed_requests) == sorted(requests.values())
            assert len(set(jobs.values())) == len(jobs)
            counts = _runs(runs)
            twice = [j for j, n in counts.items() if n > 1]
            histories = {j: (await alice.get_job(j)).history for j in twice}
            assert not twice, histories
            assert counts == collections.Counter(jobs.values()), "each job runs exactly once"
            for job_id in jobs.values():
                states = [e.state for e in (await alice.get_job(job_id)).history]
                assert states.count("DONE") == 1, (job_id, states)
        # The services recovered by themselves: same processes, and they retried the database.
        assert grid.mq.alive()
        assert grid.mq.pid == mq_pid
        assert all(a.process.poll() is None for a in agents)
        assert grid.mq.events("masterqueue.db_retry"), "the restart was not noticed"
        assert not grid.mq.events("masterqueue.db_unavailable")


def ldapmodify(
    grid: RealGrid, dn: str, attribute: str, value: str
) -> subprocess.CompletedProcess[str]:
    """An operator's ``ldapmodify`` of one attribute, with the real OpenLDAP client."""
    change = f"dn: {dn}\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n"
    s = grid.slapd
    return subprocess.run(
        ["ldapmodify", "-x", "-H", f"ldap://{s.host}:{s.port}", "-D", s.admin_dn,
         "-w", s.admin_password],
        input=change, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


async def test_slapd_stopped_keeps_the_last_good_config_and_a_bad_value_is_refused(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    config = {"podPollDuration": 1, "podPollInterval": 1}
    async with real_grid(tmp_path, mariadb, config=config, launcher="none") as grid:
        agent = grid.start_agent("cfg", *AGENT_FLAGS, "--config-refresh", "0.5")
        async with grid.client(await grid.token("user", "alice")) as alice:
            first = await alice.submit_job(JobSpec(command=["true"], ttl_s=60))
            await until_job(alice, first.id, "DONE", 60)

            grid.slapd.stop()
            await eventually(
                lambda: bool(agent.events("config.source_unreachable")), 60, "the agent noticing"
            )
            # Still configured (x = 1 s: batch work goes on) while the directory is away.
            during = [await alice.submit_job(JobSpec(command=["true"], ttl_s=60)) for _ in range(2)]
            for job in during:
                await until_job(alice, job.id, "DONE", 60)
            assert len(agent.events("config.source_unreachable")) == 1, "said once"
            assert agent.events("config.changed") == []

            grid.slapd.start()
            await eventually(
                lambda: bool(agent.events("config.source_recovered")), 60, "the agent recovering"
            )
            assert len(agent.events("config.source_recovered")) == 1

            bad = ldapmodify(grid, CE_DN, "podFallback", "sometimes")
            assert bad.returncode == 0, bad.stderr  # the directory takes any string
            await eventually(lambda: bool(agent.events("config.invalid")), 30, "the refusal")
            refusal = agent.events("config.invalid")[0]
            assert (refusal["dn"], refusal["attribute"]) == (CE_DN, "podFallback")
            assert refusal["value"] == "sometimes"
            # The last good configuration stays: fallback still batch.
            kept = await alice.submit_job(JobSpec(command=["true"], ttl_s=60))
            await until_job(alice, kept.id, "DONE", 60)
            assert agent.events("config.changed") == []
            assert agent.process.poll() is None

            fixed = ldapmodify(grid, CE_DN, "podFallback", "batch")
            assert fixed.returncode == 0, fixed.stderr
            good = ldapmodify(grid, CE_DN, "podPollDuration", "2")
            assert good.returncode == 0, good.stderr
            await eventually(lambda: bool(agent.events("config.changed")), 30, "the good change")
            change = agent.events("config.changed")[0]["changes"][0]
            assert (change["field"], change["new"], change["dn"]) == ("poll_duration_s", 2, CE_DN)
