"""``podgrid demo``: a whole local grid, one cluster's life and its analysis of real data.

The data (``--file``, globs allowed, ``--tree``, ``--branch``; default: the packaged CMS
Z→μμ events' dimuon mass) is opened and checked first, so a missing file, tree or branch is
one line on stderr and exit 2 before any grid starts. Progress goes to stdout for people;
with ``--json`` it goes to stderr and stdout holds one JSON document. Exit codes: 0 success,
1 a part failed to start or a demo step failed (the grid is shut down either way), 2 bad
flags or data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from podgrid._cmd_args import int_range
from podgrid.demo import DemoData, as_json, report_lines, run_demo
from podgrid.errors import PodGridError
from podgrid.rootfiles import SAMPLE_BRANCH, SAMPLE_TREE, DataError, find_sources, sample_file

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2

_count = int_range(1, 64)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the command tree."""
    demo = sub.add_parser(
        "demo",
        help="up + a sample cluster, an analysis of real CMS data, batch jobs + shutdown",
        description="A whole grid on this machine for one cluster's life: its workers "
        "histogram a branch of ROOT files (default: the dimuon mass of 2,304 CMS Z→μμ "
        "events, shipped with PoD Grid), by hand and with uproot.dask.",
    )
    demo.add_argument("--agents", type=_count, default=4, help="default: %(default)s")
    demo.add_argument("--workers", type=_count, default=2, help="default: %(default)s")
    demo.add_argument("--state-dir", type=Path, default=None, help="default: a temporary dir")
    demo.add_argument("--json", action="store_true", help="print the result as JSON")
    demo.add_argument(
        "--file",
        action="extend",
        nargs="+",
        default=None,
        metavar="PATH",
        help=f"ROOT file(s) to read, globs allowed (quote them); default: the packaged "
        f"{sample_file().name}",
    )
    demo.add_argument("--tree", default=SAMPLE_TREE, help="default: %(default)s")
    demo.add_argument(
        "--branch",
        default=SAMPLE_BRANCH,
        help="a numeric branch, jagged ones flattened; 1-unit bins from 0 to 120 "
        "(default: %(default)s)",
    )
    demo.set_defaults(handler=demo_command)


def demo_data(args: argparse.Namespace) -> DemoData:
    """The files to read, opened and checked (``DataError`` names what is missing)."""
    if args.file is None and (args.tree, args.branch) == (SAMPLE_TREE, SAMPLE_BRANCH):
        return DemoData.sample()
    patterns = args.file if args.file is not None else [str(sample_file())]
    return DemoData(find_sources(patterns, args.tree, args.branch))


def demo_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid demo``: 0 when every step happened, 1 otherwise (cleaned up)."""
    try:
        data = demo_data(args)
    except DataError as e:
        print(f"podgrid demo: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    temp = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="podgrid-demo-")) if temp else args.state_dir
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say(f"PoD Grid demo in {state_dir}: {args.agents} agents, {args.workers} workers")
    paths = [s.path for s in data.sources]
    files = ", ".join(paths) if len(paths) <= 3 else f"{len(paths)} files ({paths[0]}, ...)"
    say(f"data: branch {data.sources[0].branch!r} of tree {data.sources[0].tree!r} in {files}")
    try:
        result = asyncio.run(
            run_demo(state_dir, agents=args.agents, workers=args.workers, say=say, data=data)
        )
    except (PodGridError, OSError) as e:
        print(f"podgrid demo: failed: {e} (logs kept in {state_dir})", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(as_json(result), indent=2))
    else:
        for line in report_lines(result):
            say(line)
    if temp:
        shutil.rmtree(state_dir, ignore_errors=True)
    return EXIT_OK
