"""Each wire name is spelled once: outside ``podgrid/protocol`` no code writes it as a literal.

A second spelling is how the two ends of a message drift apart (a renamed parameter that the
agents keep reading under its old name); this test finds one before a user does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from podgrid.protocol import (
    AGENTS_CLUSTER_PREFIX,
    MASTERS_CLUSTER,
    QUEUE_CLUSTER,
    AgentParam,
    MasterParam,
    QueueParam,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("broker", "config", "jobagent", "masterqueue", "monitoring", "podgrid")
WIRE_NAMES = sorted(
    {MASTERS_CLUSTER, QUEUE_CLUSTER, AGENTS_CLUSTER_PREFIX}
    | {str(p) for p in (*MasterParam, *AgentParam, *QueueParam)}
    # "State" is also an ordinary English word in messages; the enum covers it.
    - {"State"}
)

# The same spelling for another concept: JDL's own keys (``MinWorkers = 4;``).
ELSEWHERE = {"config/_request_readers.py": {"MinWorkers", "MaxWorkers"}}


def _sources() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "podgrid" / "protocol"):
                continue
            parts = path.relative_to(ROOT).parts
            if parts[0] == "podgrid" and parts[1] in PACKAGES:
                continue  # podgrid/<folder> links: the folder itself is scanned once
            files.append(path)
    return files


def _literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_wire_name_is_spelled_outside_the_protocol(path: Path) -> None:
    literals = _literals(path)
    allowed = ELSEWHERE.get(path.relative_to(ROOT).as_posix(), set())
    spelled = [n for n in WIRE_NAMES if n in literals and n not in allowed]
    assert not spelled, f"{path.name} spells {spelled}: import them from podgrid.protocol"


def test_the_scan_sees_the_code() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert {"broker/cluster.py", "jobagent/servers.py", "monitoring/metrics.py"} <= names
