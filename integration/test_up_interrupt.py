"""Ctrl-C on ``podgrid up`` while a cluster is READY and a batch job runs.

``podgrid up`` must exit 0, leave nothing running, and leave the database saying what became
of both: the request CANCELLED, the batch job returned to the queue by its agent (WAITING, its
attempt not counted, the release in its history) rather than stuck RUNNING.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

from integration.test_local_grid import REQUEST, clean_env, leftovers, podgrid, reaper
from podgrid.config.hierarchy import default_ldif
from podgrid.masterqueue.store import Store
from podgrid.protocol import JobState, RequestState
from tests.harness.slapd import start_slapd

__all__ = ["reaper"]  # the fixture, used by name
UP_TIMEOUT_S = 60


def _wait_for(text: str, log: Path, up: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while text not in log.read_text():
        assert up.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"podgrid up never said {text!r}:\n{log.read_text()}"
        time.sleep(0.1)


def _cli(env: dict[str, str], state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        podgrid(*args[:2], "--state-dir", str(state_dir), *args[2:]),
        env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


async def test_sigint_of_up_with_a_ready_cluster_and_a_running_job(
    tmp_path: Path, reaper: float
) -> None:
    state_dir = tmp_path / "up"
    cluster_id, job_id = await asyncio.to_thread(_up_then_sigint, tmp_path, state_dir)
    assert leftovers(state_dir, reaper) == []

    [db] = list(state_dir.rglob("masterqueue.db"))
    store = await Store.connect(f"sqlite+aiosqlite:///{db}")
    try:
        final = await store.get_job(job_id)
        history = await store.job_events(job_id)
        req = await store.get_request(cluster_id)
    finally:
        await store.close()
    assert final.state == JobState.WAITING, history
    assert final.attempts == 0, "a release does not use up an attempt"
    assert history[-1].state == JobState.WAITING
    assert "agent shut down" in str(history[-1].reason), history
    assert JobState.RUNNING in [e.state for e in history]
    assert req.state == RequestState.CANCELLED


def _run_until_interrupted(
    up: subprocess.Popen[str], env: dict[str, str], state_dir: Path, log_path: Path, tmp: Path
) -> tuple[int, int]:
    """A READY cluster and a RUNNING job, then SIGINT; the cluster's and the job's ids."""
    _wait_for("Ctrl-C to stop", log_path, up)
    request = tmp / "one-worker.toml"
    request.write_text(REQUEST)
    submitted = _cli(env, state_dir, "submit", str(request), "--wait", "--timeout", "60")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = _cli(env, state_dir, "jobs", "submit", "--json", "--", "sleep", "300")
    assert job.returncode == 0, job.stderr
    job_id = int(json.loads(job.stdout)["id"])
    deadline = time.monotonic() + 90
    while True:
        shown = _cli(env, state_dir, "jobs", "show", str(job_id), "--json")
        if json.loads(shown.stdout)["state"] == "RUNNING":
            break
        assert time.monotonic() < deadline, shown.stdout
        time.sleep(0.3)
    listed = _cli(env, state_dir, "ls", "--json")
    [cluster] = json.loads(listed.stdout)
    assert cluster["state"] in ("READY", "FULL"), cluster

    up.send_signal(signal.SIGINT)
    up.wait(timeout=UP_TIMEOUT_S)
    return int(cluster["id"]), job_id


def _up_then_sigint(tmp_path: Path, state_dir: Path) -> tuple[int, int]:
    """``podgrid up`` on a real slapd until a cluster is READY and a job RUNNING, then SIGINT."""
    env = clean_env(tmp_path)
    log_path = tmp_path / "up.log"
    # The packaged configuration served by a real slapd, with a 3 s polling window for the
    # local CE (30 s packaged), so the agent that does not attach takes the batch job soon.
    ldif = tmp_path / "up.ldif"
    packaged = Path(default_ldif()).read_text()
    assert packaged.count("podPollDuration: 30\n") == 1
    ldif.write_text(packaged.replace("podPollDuration: 30\n", "podPollDuration: 3\n"))
    with start_slapd(str(ldif)) as slapd, log_path.open("w") as log:
        up = subprocess.Popen(
            podgrid("up", "--agents", "2", "--port-base", "auto", "--state-dir", str(state_dir),
                    "--config", slapd.url),
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            ids = _run_until_interrupted(up, env, state_dir, log_path, tmp_path)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    assert up.returncode == 0, log_path.read_text()
    return ids
