"""The embedded local grid end to end: ``podgrid demo`` and ``podgrid up`` as real processes.

Every process either command starts must be gone when it exits. The test process makes itself
a child subreaper, so anything that outlived its parent is re-parented here and still seen.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
import uproot

from tests.monitoring.registry_helpers import send_udp
from tests.monitoring.xdr_encoder import encode

ZMUMU = Path(__file__).resolve().parents[1] / "examples" / "data" / "uproot-Zmumu.root"
PR_SET_CHILD_SUBREAPER = 36
DEMO_TIMEOUT_S = 100  # the demo itself must stay under ~60 s on 2 cores
UP_TIMEOUT_S = 60
REQUEST = """
[server]
name = "up-test"
min_workers = 1
max_wait = "1m"
ttl = "10m"
[worker]
cores = 1
memory = "256MiB"
"""


@pytest.fixture
def reaper() -> float:
    """Orphans of this test's processes become our children; yields the test's start time."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, "prctl(SUBREAPER) failed"
    return time.time() - 1.0


def leftovers(state_dir: Path, since: float) -> list[str]:
    """Live processes started by this test (any depth) or naming ``state_dir``."""
    found: dict[int, str] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() >= since:
                found[proc.pid] = " ".join(proc.cmdline())
        except psutil.Error:
            continue
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(state_dir) in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found[proc.pid] = cmd
    return [f"{pid}: {cmd}" for pid, cmd in sorted(found.items())]


def clean_env(tmp_path: Path) -> dict[str, str]:
    """This environment without PODGRID_* and with a private XDG state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRID_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    return env


def podgrid(*args: str) -> list[str]:
    """``python -m podgrid ARGS`` with this interpreter."""
    return [sys.executable, "-m", "podgrid", *args]


def test_demo_runs_a_cluster_batch_jobs_and_leaves_nothing_behind(
    tmp_path: Path, reaper: float
) -> None:
    state_dir = tmp_path / "demo"
    started = time.monotonic()
    done = subprocess.run(
        podgrid("demo", "--agents", "4", "--workers", "2", "--state-dir", str(state_dir)),
        env=clean_env(tmp_path), capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
    )  # fmt: skip
    wall_s = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{done.stderr}"
    # The Z peak of the real CMS file, from chunks read on the cluster, against numpy's count.
    mass = uproot.open(ZMUMU)["events"]["M"].array(library="np")
    counts, _ = np.histogram(mass, bins=120, range=(0, 120))
    low = int(np.argmax(counts))
    assert f"uproot read {len(mass)} events of branch 'M'" in out, out
    assert f"peak bin {low}-{low + 1} GeV with {counts[low]} entries" in out, out
    assert len(re.findall(r"worker \S+ \(agent Local-\S+\) read chunks \d+-\d+", out)) == 2, out
    assert "dask collections: uproot.dask + dask.array.histogram" in out, out
    assert "the same histogram" in out, out
    for moment in ("submitted", "STARTING", "PUBLISHING", "first worker attached", "READY",
                   "analysis done", "dask collections done", "batch jobs done", "CANCELLED",
                   "shutdown"):  # fmt: skip
        assert re.search(rf"t\+\s*\d+\.\d\ds  {moment}$", out, re.MULTILINE), (moment, out)
    assert len(re.findall(r"batch job \d+: DONE on agent \S+ \(did not attach\)", out)) == 2, out
    assert len(re.findall(r"agent \S+: WORKER -> (POLLING|BATCH)", out)) == 2, out
    ready = re.search(r"submit → READY in (\d+\.\d+) s", out)
    assert ready is not None, out
    assert float(ready.group(1)) < 30, out
    assert wall_s < 60, f"the demo took {wall_s:.1f} s"
    assert leftovers(state_dir, reaper) == []


def test_up_serves_a_second_terminal_and_stops_cleanly_on_sigterm(
    tmp_path: Path, reaper: float
) -> None:
    env = clean_env(tmp_path)
    state_dir = Path(env["XDG_STATE_HOME"]) / "podgrid"
    endpoints = state_dir / "endpoints.json"
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        podgrid("up", "--agents", "2", "--port-base", "auto"),
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while "Ctrl-C to stop" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "podgrid up did not come up"
            time.sleep(0.1)
        assert stat.S_IMODE(endpoints.stat().st_mode) == 0o600
        doc = json.loads(endpoints.read_text())
        assert doc["masterqueue_url"].startswith("https://127.0.0.1:")
        assert doc["registry_url"].startswith("https://127.0.0.1:")
        assert doc["user_token"]
        assert doc["admin_token"]
        assert doc["dashboard_url"].startswith("https://127.0.0.1:")
        # HTTPS from podgrid up's own CA (in endpoints.json); plain HTTP gets no answer.
        tls = ssl.create_default_context(cafile=doc["ca_file"])
        with urllib.request.urlopen(doc["masterqueue_url"] + "/healthz", context=tls) as resp:
            assert resp.status == 200
        plain = doc["masterqueue_url"].replace("https://", "http://") + "/healthz"
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(plain, timeout=5)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(doc["registry_url"] + "/healthz", timeout=5)  # system CAs

        # The attack: pose as a PoD server with one datagram. podgrid up's registry wants
        # the ApMon password it made, so the fake entry never shows (and no agent sees it).
        udp = re.search(r"ApMon udp://([0-9.]+):(\d+)", (tmp_path / "up.log").read_text())
        assert udp is not None
        fake = encode("PoD_Masters", "9999", {"Address": "http://127.0.0.1:9/", "NeededWorkers": 5})
        send_udp((udp.group(1), int(udp.group(2))), fake)
        time.sleep(0.3)
        with urllib.request.urlopen(doc["registry_url"] + "/metrics", context=tls) as resp:
            metrics = resp.read().decode()
        assert 'podgrid_registry_datagrams_dropped_total{reason="bad_password"} 1.0' in metrics
        with urllib.request.urlopen(
            doc["registry_url"] + "/rest/*/PoD_Masters/9999/*", context=tls
        ) as resp:
            assert resp.read() == b""

        request = tmp_path / "one-worker.toml"
        request.write_text(REQUEST)
        submit = subprocess.run(
            podgrid("submit", str(request), "--wait", "--timeout", "60"),
            env=env, capture_output=True, text=True, timeout=90, cwd=tmp_path,
        )  # fmt: skip
        assert submit.returncode == 0, f"{submit.stdout}\n{submit.stderr}"
        assert re.search(r"request 1 is (READY|FULL)", submit.stdout), submit.stdout
        assert 'Client("tls://127.0.0.1:' in submit.stdout

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=UP_TIMEOUT_S) == 0, (tmp_path / "up.log").read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()
    assert "stopped" in (tmp_path / "up.log").read_text()
    assert not endpoints.exists(), "a stopped grid must not leave endpoints behind"
    assert leftovers(state_dir, reaper) == []


def test_demo_refuses_more_workers_than_agents_with_a_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        podgrid("demo", "--agents", "1", "--workers", "2", "--state-dir", str(tmp_path / "d")),
        env=clean_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "--workers (2) must not exceed --agents (1)" in done.stderr
