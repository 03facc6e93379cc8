"""Attack: ``podgrid submit /dev/urandom`` (or a FIFO, a directory, a huge file) used to read
without a bound. Request files are read only when regular and at most 1 MiB, by both the
client (``podgrid submit``) and ``podgrid request check``; the refusal names the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from podgrid.config.request import MAX_REQUEST_FILE_BYTES, load_request
from podgrid.config.request_errors import RequestError
from tests.masterqueue.factories import request_text

TIMEOUT_S = 30  # a run that reads /dev/urandom without a bound never ends: the test fails


def _podgrid(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PODGRID_URL": "http://127.0.0.1:9", "PODGRID_TOKEN": "pgt_x"}
    return subprocess.run(
        [sys.executable, "-m", "podgrid", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
    )


@pytest.mark.parametrize("command", [["submit"], ["request", "check"]])
def test_a_device_is_refused_without_reading_it(command: list[str]) -> None:
    done = _podgrid(*command, "/dev/urandom")
    assert done.returncode == 2, done.stderr
    assert "/dev/urandom" in done.stderr
    assert "not a regular file" in done.stderr


def test_fifo_directory_and_oversized_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "req.toml"
    os.mkfifo(fifo)  # nobody writes: a blocking read would hang forever
    big = tmp_path / "big.toml"
    big.write_text(request_text() + "#" * MAX_REQUEST_FILE_BYTES)
    cases = {fifo: "not a regular file", tmp_path: "not a regular file", big: "too large"}
    for path, message in cases.items():
        with pytest.raises(RequestError, match=message):
            load_request(path)
        done = _podgrid("submit", str(path))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr


def test_a_regular_file_under_the_cap_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(request_text())
    assert load_request(path).min_workers >= 1
    with pytest.raises(RequestError, match="no such file"):
        load_request(tmp_path / "missing.toml")
