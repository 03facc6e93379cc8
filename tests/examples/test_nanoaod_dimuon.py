"""``examples/nanoaod_dimuon.py`` as a user runs it: next to ``podgrid up``, on real workers."""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uproot

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "nanoaod_dimuon.py"
NANOAOD = REPO / "examples" / "data" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
UP_TIMEOUT_S = 60
SCRIPT_TIMEOUT_S = 90


@pytest.fixture
def grid_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``podgrid up`` with 2 agents until the test ends; the environment that finds it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRID_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "podgrid", "up", "--agents", "2", "--port-base", "auto"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_for(up, log_path, "Ctrl-C to stop")
            yield env
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=UP_TIMEOUT_S) == 0, log_path.read_text()
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()


def _wait_for(proc: subprocess.Popen[bytes], log: Path, line: str) -> None:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while line not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"podgrid up did not come up:\n{log.read_text()}"
        time.sleep(0.1)


def expected() -> tuple[int, list[float], list[float], int]:
    """Events, opposite- and same-charge pair masses, muons: a plain loop over the events."""
    names = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]
    with uproot.open(NANOAOD) as file:
        events = file["Events"].arrays(names).tolist()
    opposite, same, muons = [], [], 0
    for event in events:
        mus = list(zip(*(event[n] for n in names), strict=True))
        muons += len(mus)
        for a, b in itertools.combinations(mus, 2):
            (opposite if a[4] * b[4] < 0 else same).append(_mass(a, b))
    return len(events), sorted(opposite), sorted(same), muons


def _mass(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    total = [0.0, 0.0, 0.0, 0.0]
    for pt, eta, phi, m, _charge in (a, b):
        p = (pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta))
        for i, x in enumerate((math.sqrt(sum(c * c for c in p) + m * m), *p)):
            total[i] += x
    e, px, py, pz = total
    return math.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0))


def _masses(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values) or "none"


def test_the_example_pairs_muons_on_the_cluster_as_a_plain_loop_does(
    grid_env: dict[str, str], tmp_path: Path
) -> None:
    events, opposite, same, muons = expected()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--workers", "2"],
        env=grid_env, cwd=tmp_path, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    assert "READY at tls://127.0.0.1:" in out
    assert f"read {events} events in 4 tasks (" in out
    assert f"opposite-charge pairs: {len(opposite)}, masses (GeV): {_masses(opposite)}" in out
    assert f"same-charge pairs: {len(same)}, masses (GeV): {_masses(same)}" in out
    assert f"muon pt [GeV], {muons} entries:" in out
    assert muons > 0
    assert len(same) + len(opposite) > 0  # the sample has a pair, so the masses are tested
