"""The trust-model attacks on a job agent, each performed against real processes.

A real registry and master queue (SQLite), real ``podgrid jobagent run`` processes, real
brokers and ``dask worker`` processes where a cluster is the point. Each test names the
attack it performs; before the fix each one succeeded.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from distributed import Client

from podgrid.client import PodGrid
from podgrid.jobagent.batch import RELEASE_REASON, RUNNING_FILE
from tests.jobagent.grid import AgentProcess, Grid, eventually, ldif_with, running_grid

SITE, CE = "AttackSite", "attack-ce"
PAYLOAD_USER = "podgrid-payload-test"
SECRET = "agent-secret-value-0123456789"  # an agent variable that is not PODGRID_TOKEN
BATCH_ENV = {"PATH", "HOME", "TMPDIR", "PODGRID_JOB_ID", "PODGRID_AGENT_ID", "PODGRID_SANDBOX"}
BROKER = [sys.executable, "-m", "podgrid", "broker", "serve", "--publish-interval", "0.5"]
ONE_WORKER = """
[server]
name = "attack"
min_workers = 1
max_workers = 1
max_wait = "10m"
ttl = "1h"
[worker]
cores = 1
memory = "512MiB"
"""
# Prints its environment and its parent's (the process above the job); stdlib only.
SHOW_ENV = (
    "import json, os\n"
    "parent = open(f'/proc/{os.getppid()}/environ', 'rb').read().decode(errors='replace')\n"
    "print(json.dumps({'env': dict(os.environ), 'parent': parent}))\n"
)


def gone(pid: int) -> bool:
    """Dead (a zombie nobody reaped yet counts as dead)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def batch_config(tmp: Path) -> str:
    """Straight to batch work: no polling window."""
    return ldif_with(tmp / "c.ldif", SITE, CE, podPollDuration=0, podPollInterval=1)


def start(grid: Grid, name: str, config: str, *extra: str) -> AgentProcess:
    """An agent with a long slot and a short grace."""
    return grid.start_agent(
        name, config, "--slot-ttl", "600", "--grace", "0.5", *extra, site=SITE, ce=CE
    )


async def stdout_of(agent: AgentProcess, job: int, timeout_s: float = 20) -> str:
    """The first line the job printed (waits for it)."""
    out: list[Path] = []

    def printed() -> bool:
        out[:] = list((agent.state_dir / "sandboxes").glob(f"job-{job}-*/stdout.txt"))
        return bool(out) and out[0].read_text().strip() != ""

    await eventually(printed, timeout_s, f"output of job {job}")
    return out[0].read_text().splitlines()[0]


async def final_state(grid: Grid, job: int, timeout_s: float = 30) -> str:
    """Wait until the job is no longer running; its state."""

    async def ended() -> bool:
        return await grid.job_state(job) in ("DONE", "ERROR_E", "EXPIRED", "KILLED")

    await eventually(ended, timeout_s, f"job {job} ended")
    return await grid.job_state(job)


# --- 1. payload isolation -------------------------------------------------------------------


async def test_batch_job_sees_no_agent_variable_nor_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: a job reads PODGRID_TOKEN (or any agent secret) from its or its parent's env."""
    monkeypatch.setenv("PODGRID_TEST_AGENT_SECRET", SECRET)
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job(sys.executable, "-c", SHOW_ENV, env={"MINE": "1"})
        agent = start(grid, "env1", batch_config(tmp_path))
        assert await final_state(grid, job) == "DONE"
        seen = json.loads(await stdout_of(agent, job))
        # LC_CTYPE: the job's own Python sets it when coercing the C locale (PEP 538).
        assert set(seen["env"]) - {"LC_CTYPE"} == BATCH_ENV | {"MINE"}
        for text in (json.dumps(seen["env"]), seen["parent"]):
            assert grid.agent_token not in text
            assert SECRET not in text
            assert "PODGRID_TOKEN" not in text
        assert agent.events("jobagent.payload_not_isolated"), "root without a payload user"


async def test_worker_tasks_cannot_read_the_agent_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: ``client.run(lambda: os.environ["PODGRID_TOKEN"])`` on one's own cluster."""
    monkeypatch.setenv("PODGRID_TEST_AGENT_SECRET", SECRET)
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=3600, podPollInterval=1)
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        agent = grid.start_agent(
            "w1", config, "--slot-ttl", "600", "--cores", "1", "--memory", "2048", site=SITE, ce=CE
        )
        record = await grid.user.submit_request(ONE_WORKER, "toml")
        await eventually(lambda: bool(agent.events("jobagent.attached")), 60, "worker attached")
        # The owner's own key, made here; the CSR is signed through the master queue.
        info = await PodGrid(grid.user).connection(record.id)
        async with Client(info.address, security=info.security(), asynchronous=True) as client:
            # Builtins only: the worker cannot import this module.
            envs = await client.run(eval, "dict(__import__('os').environ)")
            token = await client.run(eval, "__import__('os').environ.get('PODGRID_TOKEN')")
        (env,) = envs.values()
        assert list(token.values()) == [None]
        assert grid.agent_token not in json.dumps(env)
        assert SECRET not in json.dumps(env)
        assert not {k for k in env if k.startswith("PODGRID_")} - {"PODGRID_SITE", "PODGRID_CE"}
        run_dir = next((agent.state_dir / "workers").iterdir())
        assert env["HOME"] == str(run_dir / "home")
        assert env["TMPDIR"] == str(run_dir / "tmp")
        # __DASK_PARENT_PID: distributed sets it inside the worker process itself.
        allowed = {"PATH", "HOME", "TMPDIR", "LANG", "TZ", "PYTHONPATH", "__DASK_PARENT_PID"}
        assert set(env) <= allowed | {k for k in env if k.startswith(("LC_", "DASK_", "PODGRID_"))}


@pytest.fixture
def payload_user() -> pwd.struct_passwd:
    """A real unprivileged system user (created when missing; needs root, as CI has)."""
    try:
        pwd.getpwnam(PAYLOAD_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PAYLOAD_USER], check=True)
    return pwd.getpwnam(PAYLOAD_USER)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a payload uid needs root")
async def test_batch_job_runs_as_payload_user_and_cannot_read_agent_secrets(
    payload_user: pwd.struct_passwd,
) -> None:
    """Attack: a job reads a 0600 token file and /proc/<agent>/environ (the agent's token)."""
    # Under /tmp (the payload must reach its sandbox; pytest's own tmp dir is 0700).
    tmp = Path(tempfile.mkdtemp(prefix="podgrid-payload-"))
    os.chmod(tmp, 0o711)  # traversable, not listable
    probe = (
        "import json, os, sys\n"
        "def read(path):\n"
        "    try:\n"
        "        open(path, 'rb').read(); return 'READ'\n"
        "    except PermissionError: return 'denied'\n"
        "print(json.dumps([os.getuid(), os.getgid(), os.getgroups()]"
        " + [read(p) for p in sys.argv[1:]]))\n"
    )
    try:
        async with running_grid(tmp) as grid:
            admin_token = tmp / "mq" / "admin.token"
            assert admin_token.stat().st_mode & 0o777 == 0o600
            agent = start(grid, "p1", batch_config(tmp), "--payload-user", PAYLOAD_USER)
            await eventually(lambda: bool(agent.events("jobagent.payload_user")), 20, "start")
            running = agent.state_dir / "sandboxes" / RUNNING_FILE
            environ = f"/proc/{agent.process.pid}/environ"
            job = await grid.submit_job(
                "/usr/bin/python3", "-c", probe, str(admin_token), environ, str(running)
            )
            assert await final_state(grid, job) == "DONE"
            uid, gid, groups, token_read, environ_read, running_read = json.loads(
                await stdout_of(agent, job)
            )
            assert (uid, gid) == (payload_user.pw_uid, payload_user.pw_gid)
            assert groups == [], "no supplementary group of the agent's"
            assert (token_read, environ_read) == ("denied", "denied")
            assert running_read in ("denied", "READ")  # 0600 when it exists; gone afterwards
            sandbox = next((agent.state_dir / "sandboxes").glob(f"job-{job}-*"))
            assert sandbox.stat().st_uid == payload_user.pw_uid
            assert (sandbox / "stdout.txt").stat().st_uid == 0, "the agent's, not the job's"
            assert not agent.events("jobagent.payload_not_isolated")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_agent_refuses_a_payload_user_it_cannot_use(tmp_path: Path) -> None:
    """A misspelt payload user is a start-up error, not a silently unisolated agent."""
    env = {**os.environ, "PODGRID_TOKEN": "t" * 20}
    argv = [sys.executable, "-m", "podgrid", "jobagent", "run", "--state-dir", str(tmp_path)]
    done = subprocess.run(
        [
            *argv,
            "--payload-user",
            "no-such-user-podgrid",
            "--masterqueue-url",
            "http://127.0.0.1:9",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "no-such-user-podgrid" in done.stderr + done.stdout


# --- 2. poison jobs --------------------------------------------------------------------------


async def test_agent_survives_a_job_it_cannot_start_and_takes_the_next(tmp_path: Path) -> None:
    """Attack: job A makes job B unstartable on the same agent (every sandbox name taken).

    Before: the spawn failure escaped the runner, the agent died, B was requeued to kill the
    next agent. Now B is ERROR_E 127 and the agent runs C.
    """
    async with running_grid(tmp_path) as grid:
        victim = await grid.submit_job("true", priority=0)
        after = await grid.submit_job("true", priority=-1)
        names = [f"../job-{victim}-1"] + [f"../job-{victim}-1.{n}" for n in range(1, 100)]
        plant = f"for n in {names!r}: open(n, 'w').close()"
        attacker = await grid.submit_job(sys.executable, "-c", plant, priority=10)
        agent = start(grid, "s1", batch_config(tmp_path))
        assert await final_state(grid, attacker) == "DONE"
        assert await final_state(grid, victim) == "ERROR_E"
        assert (await grid.user.get_job(victim)).exit_code == 127
        assert await final_state(grid, after) == "DONE"
        assert agent.process.poll() is None, "the agent lives on"
        failed = agent.events("jobagent.batch_start_failed")
        assert [e["job_id"] for e in failed] == [victim]
        assert "FileExistsError" in failed[0]["error"]


# --- 3. a job dies with its agent ------------------------------------------------------------


async def test_sigkill_of_the_agent_kills_its_job(tmp_path: Path) -> None:
    """Attack (on exactly-once): SIGKILL the agent; its job ran on, and ran again elsewhere."""
    script = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job(sys.executable, "-c", script)
        agent = start(grid, "k1", batch_config(tmp_path))
        pid = int(await stdout_of(agent, job))
        assert not gone(pid)
        agent.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(agent.process.wait, 10)
        took = await eventually(lambda: gone(pid), 2.0, f"job process {pid} gone")
        assert took < 2.0


async def test_sigkill_of_the_agent_kills_its_dask_worker(tmp_path: Path) -> None:
    """Attack: SIGKILL the agent while it runs a worker; the worker (its own session) ran on,
    still holding its place in the cluster and the slot's resources."""
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=3600, podPollInterval=1)
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        agent = grid.start_agent(
            "kw", config, "--slot-ttl", "600", "--cores", "1", "--memory", "2048", site=SITE, ce=CE
        )
        await grid.user.submit_request(ONE_WORKER, "toml")
        await eventually(lambda: bool(agent.events("jobagent.attached")), 60, "worker attached")
        (started,) = agent.events("jobagent.worker_started")
        group = int(started["pid"])  # the leader of the worker's session and process group
        members = [p.pid for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == group]
        assert members
        agent.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(agent.process.wait, 10)
        took = await eventually(lambda: all(gone(pid) for pid in members), 5.0, "worker gone")
        assert took < 5.0


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


async def test_a_replacement_agent_kills_what_its_predecessor_left(tmp_path: Path) -> None:
    """Attack: agent and supervisor die together (OOM killer); a grandchild of the job lives.

    The agent is frozen, its job's supervisor SIGKILLed (the job's leader follows it by
    PDEATHSIG; its child, in the same group, does not), then the agent is SIGKILLed. A new
    agent on the same state dir finds running.json and kills the group.
    """
    script = (
        "import subprocess, time; p = subprocess.Popen(['sleep', '300']);"
        "print(p.pid, flush=True); time.sleep(300)"
    )
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job(sys.executable, "-c", script)
        agent = start(grid, "r1", batch_config(tmp_path))
        grandchild = int(await stdout_of(agent, job))
        supervisor = agent.events("jobagent.batch_started")[0]["pid"]
        recorded = json.loads((agent.state_dir / "sandboxes" / RUNNING_FILE).read_text())
        assert recorded["pgid"] == supervisor
        assert recorded["job_id"] == job
        agent.process.send_signal(signal.SIGSTOP)
        os.kill(supervisor, signal.SIGKILL)
        await eventually(lambda: gone(supervisor), 5, "the supervisor gone")
        agent.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(agent.process.wait, 10)
        await asyncio.sleep(0.5)
        assert not gone(grandchild), "the set-up: a leftover of the job is still running"
        assert os.getpgid(grandchild) == supervisor
        replacement = start(grid, "r1", batch_config(tmp_path))
        await eventually(lambda: gone(grandchild), 20, "the leftover killed by the replacement")
        killed = replacement.events("jobagent.leftover_killed")
        assert [(e["pgid"], e["job_id"]) for e in killed] == [(supervisor, job)]


async def test_a_recorded_group_that_is_not_the_job_is_left_alone(tmp_path: Path) -> None:
    """A stale running.json whose pgid is now someone else's group: nothing is killed."""
    bystander = await asyncio.create_subprocess_exec("sleep", "60", start_new_session=True)
    try:
        async with running_grid(tmp_path) as grid:
            sandboxes = grid.tmp / "agents" / "b1" / "sandboxes"
            sandboxes.mkdir(parents=True)
            (sandboxes / RUNNING_FILE).write_text(
                json.dumps({"pgid": bystander.pid, "job_id": 7, "start_ticks": 1})
            )
            agent = start(grid, "b1", batch_config(tmp_path))
            await eventually(lambda: agent.state is not None, 20, "the agent running")
            assert bystander.returncode is None
            assert not agent.events("jobagent.leftover_killed")
            assert not (sandboxes / RUNNING_FILE).exists()
    finally:
        bystander.kill()
        await bystander.wait()


# --- 4. shutdown is not the job's failure ----------------------------------------------------


async def test_a_batch_systems_sigterm_to_job_and_agent_returns_the_job(tmp_path: Path) -> None:
    """scancel / pre-emption signals every process of the slot: the payload died of it a
    moment before the agent saw its own SIGTERM, and the job was recorded ERROR_E exit 143."""
    script = "import os, time; print(os.getpid(), flush=True); time.sleep(30)"
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job(sys.executable, "-c", script, max_attempts=1)
        agent = start(grid, "s1", batch_config(tmp_path))
        pid = int(await stdout_of(agent, job))
        os.kill(pid, signal.SIGTERM)  # the payload first, as a batch system may
        await asyncio.sleep(0.05)
        agent.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(agent.process.wait, 20) == 0
        record = await grid.user.get_job(job)
        assert str(record.state) == "WAITING", record.history
        assert record.attempts == 0
        assert RELEASE_REASON in str(record.history[-1].reason)


async def test_sigterm_of_the_agent_returns_its_job_to_the_queue(tmp_path: Path) -> None:
    """Attack (on the user): the operator's SIGTERM recorded her job as ERROR_E exit 143."""
    script = "import time; print('started', flush=True); time.sleep(2)"
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job(sys.executable, "-c", script, max_attempts=1)
        first = start(grid, "t1", batch_config(tmp_path))
        await stdout_of(first, job)
        first.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.process.wait, 20) == 0
        record = await grid.user.get_job(job)
        assert str(record.state) == "WAITING"
        assert record.attempts == 0
        assert RELEASE_REASON in str(record.history[-1].reason)
        second = start(grid, "t2", batch_config(tmp_path))
        assert await final_state(grid, job) == "DONE"
        history = (await grid.user.get_job(job)).history
        assert [str(h.state) for h in history].count("DONE") == 1
        assert [h.agent_id for h in history if str(h.state) == "DONE"] == ["t2"]
        assert (await grid.user.get_job(job)).attempts == 1
        assert second.process.poll() is None
