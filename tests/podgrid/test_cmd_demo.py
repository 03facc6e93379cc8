"""``podgrid demo`` on a user's own ROOT files, and its one-line refusals of bad ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

ZMUMU = Path(__file__).resolve().parents[2] / "examples" / "data" / "uproot-Zmumu.root"
DEMO_TIMEOUT_S = 100


def podgrid_demo(
    tmp_path: Path, *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m podgrid demo ARGS`` with a private state dir and no PODGRID_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRID_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    argv = [sys.executable, "-m", "podgrid", "demo", "--state-dir", str(tmp_path / "demo"), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "{tmp}/nothing.root"], "--file '{tmp}/nothing.root': no such file"),
        (["--file", "{tmp}/*.nothing"], "--file '{tmp}/*.nothing': no file matches this pattern"),
        (["--tree", "Events"], "no tree 'Events' (trees in the file: events)"),
        (["--branch", "Muon_pt"], "tree 'events' has no branch 'Muon_pt' (branches: Type, Run,"),
    ],
)
def test_a_missing_file_tree_or_branch_is_one_line_before_any_grid(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = podgrid_demo(tmp_path, *(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, done
    assert done.stderr.startswith("podgrid demo: "), done.stderr
    assert message.format(tmp=tmp_path) in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr  # no traceback
    assert done.stdout == ""  # nothing started: no grid, no state dir
    assert not (tmp_path / "demo").exists()


def test_the_demo_reads_a_users_files_given_by_a_glob(tmp_path: Path) -> None:
    data = tmp_path / "mydata"
    data.mkdir()
    for name in ("run1.root", "run2.root"):
        shutil.copy(ZMUMU, data / name)
    with uproot.open(ZMUMU) as file:
        mass = np.asarray(file["events"]["M"].array(library="np"))
    counts = 2 * np.bincount(np.floor(mass[mass < 120]).astype(int), minlength=120)

    done = podgrid_demo(
        tmp_path, "--file", str(data / "run*.root"), "--json", timeout_s=DEMO_TIMEOUT_S
    )

    assert done.returncode == 0, done.stderr
    analysis = json.loads(done.stdout)["analysis"]
    assert analysis["files"] == [str(data / "run1.root"), str(data / "run2.root")]
    assert analysis["events"] == 2 * len(mass)
    assert analysis["counts"] == counts.tolist()
    assert analysis["peak"]["count"] == counts.max()
    read = sorted(
        (Path(c["file"]).name, c["start"], c["stop"])
        for chunks in analysis["chunks_by_worker"].values()
        for c in chunks
    )
    assert len(analysis["chunks_by_worker"]) == 2  # both workers read
    for name in ("run1.root", "run2.root"):
        spans = [(a, b) for f, a, b in read if f == name]
        assert [e for a, b in spans for e in range(a, b)] == list(range(len(mass)))
    assert analysis["dask_collections"]["same_histogram"] is True
    assert "peak bin" in done.stderr  # the progress, for people, went to stderr
