"""``podgrid up``: the embedded local grid, until Ctrl-C (``podgrid demo`` is ``_cmd_demo``).

Progress goes to stdout. Exit codes: 0 stopped by SIGINT/SIGTERM, 1 a part failed to start
(the grid is shut down either way), 2 bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from podgrid._cmd_args import int_range
from podgrid.config.runtime import capture_signals, default_state_dir
from podgrid.localgrid import LocalGridError, PortMode, Say, run_local_grid

EXIT_OK, EXIT_FAILURE = 0, 1


_count = int_range(1, 64)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``up`` to the command tree."""
    up = sub.add_parser("up", help="a whole local grid (registry, master queue, N agents)")
    up.add_argument("--agents", type=_count, default=4, help="default: %(default)s")
    up.add_argument("--state-dir", type=Path, default=None, help="default: the user's state dir")
    up.add_argument("--config", default=None, help="ldap://host:port/base or an .ldif path")
    up.add_argument(
        "--port-base",
        choices=["auto", "default"],
        default="default",
        help="default: the LDIF's ports (8885, 8884/udp, 8886) where free; auto: free ports",
    )
    up.set_defaults(handler=up_command)


def _say(stream: TextIO) -> Say:
    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    return say


async def _up(state_dir: Path, agents: int, config: str | None, ports: PortMode) -> None:
    say = _say(sys.stdout)
    async with run_local_grid(state_dir, agents=agents, config=config, ports=ports, say=say) as g:
        stop = asyncio.Event()
        say(f"endpoints: {g.endpoints_path}")
        say("in another terminal: podgrid submit examples/dimuon-scan.toml --wait")
        say("Ctrl-C to stop")
        with capture_signals(lambda _sig: stop.set()):
            await stop.wait()
        say("stopping: site, clusters, master queue, registry")
    say("stopped")


def up_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid up``: run the local grid until SIGINT/SIGTERM."""
    state_dir = args.state_dir or default_state_dir()
    try:
        asyncio.run(_up(state_dir, args.agents, args.config, args.port_base))
    except (LocalGridError, OSError) as e:
        print(f"podgrid up: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
