"""``PodCluster`` against a real local grid (``podgrid up``: registry, master queue, 4 agents).

As a Dask user would: ``with PodCluster(...) as cluster, Client(cluster)`` computes with no
credentials passed by hand; ``scale(3)`` brings a third agent's worker and ``scale(1)``
retires two without losing (or recomputing) the results they held; ``adapt`` grows under a
queue of tasks and shrinks when idle; ``from_id`` re-attaches from another process; ``close``
cancels the request and the agents go back to polling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from distributed import Client

from podgrid.cluster import PodCluster, list_clusters

UP_TIMEOUT_S = 90
SLOW = pytest.mark.timeout(240)


@dataclass
class LocalGrid:
    """A ``podgrid up`` process and its state directory."""

    state_dir: Path
    process: subprocess.Popen[bytes]

    def endpoints(self) -> dict[str, str]:
        return dict(json.loads((self.state_dir / "endpoints.json").read_text()))


def wait_for(probe: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGrid]:
    tmp = tmp_path_factory.mktemp("podcluster")
    state_dir = tmp / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRID_")}
    env["XDG_STATE_HOME"] = str(tmp / "xdg-state")
    env["XDG_CONFIG_HOME"] = str(tmp / "xdg-config")
    out = (tmp / "up.log").open("wb")
    argv = [sys.executable, "-m", "podgrid", "up", "--agents", "4", "--state-dir", str(state_dir)]
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # fmt: skip
    out.close()
    grid = LocalGrid(state_dir, proc)
    try:
        wait_for(
            lambda: b"dashboard:" in (tmp / "up.log").read_bytes() or proc.poll() is not None,
            UP_TIMEOUT_S,
            "podgrid up",
        )
        assert proc.poll() is None, (tmp / "up.log").read_text(errors="replace")
        yield grid
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def agent_states(grid: LocalGrid) -> list[str]:
    """The State every agent last wrote (``agent.json`` of the local site's agents)."""
    states = []
    for path in sorted((grid.state_dir / "site").glob("agents/*/agent.json")):
        try:
            states.append(json.loads(path.read_text())["params"]["State"])
        except (OSError, ValueError, KeyError):
            states.append("?")
    return states


def request_state(grid: LocalGrid, request_id: int) -> str:
    found = [r for r in list_clusters(state_dir=grid.state_dir) if r.id == request_id]
    return found[0].state.value if found else "final"


def workers_of(cluster: PodCluster) -> int:
    return len(cluster.scheduler_info["workers"])


@SLOW
def test_scale_up_and_down_then_close_cancels(local_grid: LocalGrid) -> None:
    with (
        PodCluster(
            min_workers=2, max_workers=2, memory="256MiB", name="scale-test",
            state_dir=local_grid.state_dir, timeout=60, quiet=True,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        rid = cluster.request_id
        assert client.submit(sum, [1, 2, 3]).result() == 6
        assert cluster.dashboard_link.endswith("/dashboard/status")
        html = cluster._repr_html_()
        assert "PodCluster" in html
        assert cluster.dashboard_link in html

        cluster.scale(3)
        cluster.wait_for_workers(3, timeout=60)
        assert cluster.scaling is not None
        assert cluster.scaling.target == 3
        assert "Manual" in cluster._scaling_status()
        # Results on every worker; random, so a recomputed one would differ.
        futures = [
            client.submit(uuid.uuid4, pure=False, workers=[w])
            for w in list(cluster.scheduler_info["workers"])
            for _ in range(4)
        ]
        held = client.gather(futures)
        cluster.scale(1)
        wait_for(lambda: workers_of(cluster) == 1, 60, "two workers retired")
        assert client.gather(futures) == held

        # Another process re-attaches to the running cluster and computes there.
        code = (
            "from distributed import Client\n"
            "from podgrid import PodCluster\n"
            f"with PodCluster.from_id({rid}, state_dir={str(local_grid.state_dir)!r},"
            " quiet=True) as c, Client(c) as client:\n"
            "    print(client.submit(sum, [20, 22]).result(), len(c.scheduler_info['workers']))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert done.stdout.split() == ["42", "1"], done.stderr[-2000:]
        assert request_state(local_grid, rid) == "READY"  # from_id does not cancel
    wait_for(lambda: request_state(local_grid, rid) == "final", 30, "the request cancelled")
    wait_for(
        lambda: agent_states(local_grid).count("POLLING") == 4, 60, "every agent back to polling"
    )


@SLOW
def test_adapt_grows_under_work_and_shrinks_when_idle(local_grid: LocalGrid) -> None:
    with (
        PodCluster(
            min_workers=1, max_workers=1, memory="256MiB", name="adapt-test",
            state_dir=local_grid.state_dir, timeout=60, quiet=True,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        cluster.adapt(minimum=1, maximum=3)
        assert "Adaptive" in cluster._scaling_status()
        futures = client.map(time.sleep, [0.5] * 80, pure=False)
        wait_for(lambda: workers_of(cluster) == 3, 90, "adaptive growth to 3 workers")
        client.gather(futures)
        del futures
        wait_for(lambda: workers_of(cluster) == 1, 90, "adaptive shrink to the minimum")


TASK_RECTANGLES_JS = """() => {
  for (const doc of (window.Bokeh && window.Bokeh.documents) || []) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (data && data.duration && data.worker_thread) return data.duration.length;
    }
  }
  return -1;
}"""


@SLOW
def test_dashboard_opens_for_the_owner_only(local_grid: LocalGrid, tmp_path: Path) -> None:
    """Headless Chromium: with the owner's certificate the task stream fills; without, 401."""
    from playwright import sync_api  # the test extra; never skipped: .ci/setup installs both

    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "no /usr/bin/chromium: bash .ci/setup installs it"
    with (
        PodCluster(
            min_workers=1, max_workers=1, memory="256MiB", name="dashboard-test",
            state_dir=local_grid.state_dir, timeout=60, quiet=True,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        info = cluster.connection_info
        assert info is not None
        assert info.tls_client_cert is not None
        assert info.tls_client_key is not None
        cert, key = tmp_path / "owner.pem", tmp_path / "owner.key"
        cert.write_text(info.tls_client_cert)
        key.write_text(info.tls_client_key)
        key.chmod(0o600)
        logs = cluster.get_logs()  # the scheduler's and each worker's own log lines
        assert "Scheduler" in logs
        worker_logs = [text for name, text in logs.items() if name.startswith("tls://")]
        assert len(worker_logs) == 1
        assert "Start worker" in worker_logs[0] or "Starting Worker" in worker_logs[0]
        link = cluster.dashboard_link
        shown = subprocess.run(
            [sys.executable, "-m", "podgrid", "info", str(cluster.request_id), "-d", "--json",
             "--state-dir", str(local_grid.state_dir)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        dashboard = json.loads(shown.stdout)["dashboard"]
        assert dashboard["url"] == link
        assert Path(dashboard["cert_file"]).read_text().startswith("-----BEGIN CERTIFICATE")
        origin = link.split("/dashboard/")[0]
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium))
            try:
                # The broker's certificate names request-<id>.brokers.podgrid and is signed by
                # the master queue's broker CA, which this browser does not know: only the
                # client side (the owner's certificate) is under test here.
                owner = browser.new_context(
                    ignore_https_errors=True,
                    client_certificates=[{"origin": origin, "certPath": cert, "keyPath": key}],
                )
                page = owner.new_page()
                answer = page.goto(link)
                assert answer is not None
                assert answer.status == 200
                page.wait_for_function(f"({TASK_RECTANGLES_JS})() >= 0", timeout=30_000)
                client.gather(client.map(time.sleep, [0.05] * 20, pure=False))
                page.wait_for_function(f"({TASK_RECTANGLES_JS})() >= 20", timeout=30_000)

                stranger = browser.new_context(ignore_https_errors=True).new_page()
                refused = stranger.goto(link)
                assert refused is not None
                assert refused.status == 401
                assert "Bokeh" not in stranger.content()
            finally:
                browser.close()
