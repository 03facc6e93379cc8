"""A command imports only what it needs: brokers and agents start fast (issue figure < 1 s)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from podgrid.cli import COMMANDS, build_parser

# What only the master queue's storage layer and the ssh launcher need (~1 s of imports).
HEAVY = ("sqlalchemy", "alembic", "asyncssh", "podgrid.masterqueue.store")

PROBE = """
import sys
from podgrid.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["broker", "serve", "-h"], ["jobagent", "run", "-h"]])
def test_service_started_by_a_launcher_skips_other_commands_imports(argv: list[str]) -> None:
    # ``-h`` stops right after parsing: what is loaded by then is paid by every start.
    probe = [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv]
    out = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines()[-1] == ""


def test_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    build_parser().print_help()
    listed = capsys.readouterr().out
    assert all(f"    {name}" in listed for name in COMMANDS)
