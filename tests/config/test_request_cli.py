"""``podgrid request check``: the parsed request or the error, and the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from podgrid.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TOML = REPO / "examples" / "dimuon-scan.toml"
EXAMPLE_JDL = REPO / "examples" / "dimuon-scan.jdl"


def test_check_prints_the_request_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["request", "check", str(EXAMPLE_JDL)]) == 0
    out = capsys.readouterr().out
    assert "dimuon-scan" in out
    assert "4h (14400 s)" in out
    assert "2048 MiB" in out
    assert "ROOT::v6-32" in out


def test_check_json_is_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["request", "check", "--json", str(EXAMPLE_TOML)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["max_workers"] == 32
    assert data["worker"] == {
        "cores": 1,
        "memory_mb": 2048,
        "packages": ["ROOT::v6-32"],
        "sites": [],
    }


def test_check_reports_the_error_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "req.jdl"
    bad.write_text('Name = "x";\nMinWorkers = 4;\nMaxWorkers = 2;\n')
    assert main(["request", "check", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"{bad}:3: MaxWorkers: must be >= min_workers (4), got 2"


def test_check_json_error_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "req.jdl"
    bad.write_text('Name = "x";\nMaxWorkers = 2\n')
    assert main(["request", "check", "--json", str(bad)]) == 2
    data = json.loads(capsys.readouterr().out)
    assert {k: data[k] for k in ("source", "line", "column", "field")} == {
        "source": str(bad),
        "line": 2,
        "column": 15,
        "field": None,
    }
    assert data["problem"] == "expected ';' after value of MaxWorkers, found end of input"
    assert len(data["errors"]) == 1


def test_check_applies_the_cap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["request", "check", "--max-workers-cap", "16", str(EXAMPLE_TOML)]) == 2
    err = capsys.readouterr().err
    assert "server.max_workers: must be <= the operator's cap of 16 workers, got 32" in err


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"
    assert main(["request", "check", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"{missing}: no such file"


def test_check_in_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "podgrid", "request", "check", "--json", str(EXAMPLE_JDL)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == "dimuon-scan"
