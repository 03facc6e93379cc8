"""Run the benchmarks and put their output in ``benchmarks/README.md`` (the "Latest figures").

Run: ``.venv/bin/python benchmarks/report.py [NAME ...]`` (default: all in :data:`BENCHMARKS`).
Each benchmark runs as its own process with the arguments below; its stdout replaces the
block between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in the README, headed by the
date, the machine (cores, memory, load before the run) and the exact command. A benchmark
that fails keeps its old block and the report says so.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
PYTHON = sys.executable
BENCHMARKS: dict[str, list[str]] = {
    "time_to_cluster": ["time_to_cluster.py", "--runs", "5"],
    "attach_storm": ["attach_storm.py"],
    "agent_attach": ["agent_attach.py"],
    "match_throughput": ["match_throughput.py", "--quick"],
    "registry_load": ["registry_load.py", "--quick"],
    "config_resolve": ["config_resolve.py"],
    "slot_waste": ["slot_waste.py"],
}


def machine() -> str:
    """Cores, memory and the load average now."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {memory:.0f} GiB, load average {load} before the run"


def run(name: str, argv: list[str]) -> str | None:
    """The benchmark's stdout, or None when it failed."""
    command = [PYTHON, str(HERE / argv[0]), *argv[1:]]
    shown = " ".join([".venv/bin/python", f"benchmarks/{argv[0]}", *argv[1:]])
    header = f"{dt.date.today().isoformat()}, {machine()}; `{shown}`"
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent, check=False)
    if done.returncode != 0:
        print(f"{name}: failed ({done.returncode}): {done.stderr[-2000:]}", file=sys.stderr)
        return None
    return f"{header}\n\n```\n{done.stdout.strip()}\n```"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with ``name``'s block replaced (added at the end when missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return f"{text.rstrip()}\n\n### {name}\n\n{block}\n"


def main() -> int:
    """Run what was asked, rewrite the README; 1 if any benchmark failed."""
    names = sys.argv[1:] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks: {unknown}; known: {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        print(f"running {name} ...", flush=True)
        body = run(name, BENCHMARKS[name])
        if body is None:
            failed += 1
            continue
        README.write_text(replace_block(README.read_text(encoding="utf-8"), name, body))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
