"""``podgrid jobs submit|ls|show|kill``: ordinary batch jobs (what agents fall back to).

``jobs submit [--cores N] [--memory MB] [--ttl S] [--priority P] [--env K=V ...] -- CMD...``
runs CMD as an argv (no shell) on the first agent whose slot fits.
"""

from __future__ import annotations

import argparse
from typing import Any

from podgrid import _cmd_render as render
from podgrid._cmd_common import UsageError, endpoint_flags, json_flag, print_json, run
from podgrid.client import PodGrid
from podgrid.config.units import UnitError, parse_duration_s, parse_memory_mb


def register(sub: Any) -> None:
    """Add the ``jobs`` group to the ``podgrid`` command tree."""
    group = sub.add_parser("jobs", help="batch jobs (what idle agents run)")
    commands = group.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)
    common = [endpoint_flags(), json_flag()]
    _add_submit(commands, common)

    ls = commands.add_parser("ls", parents=common, help="list your batch jobs")
    ls.set_defaults(handler=lambda args: run(args, ls_command))

    show = commands.add_parser("show", parents=common, help="one batch job and its history")
    show.add_argument("id", metavar="ID", type=_job_id)
    show.set_defaults(handler=lambda args: run(args, show_command))

    kill = commands.add_parser("kill", parents=[endpoint_flags()], help="kill a batch job")
    kill.add_argument("id", metavar="ID", type=_job_id)
    kill.set_defaults(handler=lambda args: run(args, kill_command))


def _add_submit(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    submit = commands.add_parser(
        "submit",
        parents=common,
        help="submit a batch job: podgrid jobs submit [options] -- CMD [ARG...]",
    )
    submit.add_argument("--cores", type=int, default=1, metavar="N", help="default: %(default)s")
    submit.add_argument(
        "--memory",
        type=_memory_mb,
        default=1024,
        metavar="MB",
        help="MiB, or with a unit (2GiB); default: %(default)s",
    )
    submit.add_argument(
        "--ttl",
        type=_duration_s,
        default=3600,
        metavar="S",
        help="the job's run time limit: seconds or 30m, 2h; default: %(default)s",
    )
    submit.add_argument(
        "--priority",
        type=int,
        default=0,
        metavar="P",
        help="higher runs first (-1000..1000); default: %(default)s",
    )
    submit.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="runs before EXPIRED when agents lose it; default: %(default)s",
    )
    submit.add_argument(
        "--env",
        action="extend",
        nargs="+",
        default=[],
        metavar="K=V",
        help="environment variables for the command",
    )
    submit.add_argument(
        "--package",
        dest="packages",
        action="append",
        default=[],
        metavar="PKG",
        help="a package the slot must offer (repeatable)",
    )
    submit.add_argument(
        "--site",
        dest="sites",
        action="append",
        default=[],
        metavar="SITE",
        help="a site the job may run at (repeatable; default: any)",
    )
    submit.add_argument("command", nargs="+", metavar="CMD", help="the command, after --")
    submit.set_defaults(handler=lambda args: run(args, submit_command))


def _job_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a job id (a whole number >= 1), got {text!r}")
    return int(text)


def _memory_mb(text: str) -> int:
    try:
        return parse_memory_mb(int(text) if text.isdigit() else text)
    except UnitError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _duration_s(text: str) -> int:
    try:
        return parse_duration_s(int(text) if text.isdigit() else text)
    except UnitError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--env: expected K=V, got {pair!r}")
        env[name] = value
    return env


async def submit_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid jobs submit``: one batch job; prints its id (or the record with ``--json``)."""
    job = await grid.submit_job(
        args.command,
        env=_env(args.env),
        cores=args.cores,
        memory_mb=args.memory,
        ttl_s=args.ttl,
        priority=args.priority,
        max_attempts=args.max_attempts,
        packages=tuple(args.packages),
        sites=tuple(args.sites),
    )
    if args.json:
        print_json(job.model_dump(mode="json"))
    else:
        render.console().print(f"job {job.id} submitted ({job.state})")
    return 0


async def ls_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid jobs ls``: the user's batch jobs."""
    jobs = await grid.jobs()
    if args.json:
        print_json([j.model_dump(mode="json") for j in jobs])
    elif not jobs:
        render.console().print("no jobs")
    else:
        render.console().print(render.jobs_table(jobs))
    return 0


async def show_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid jobs show ID``: the job's fields and history."""
    job = await grid.job(args.id)
    if args.json:
        print_json(job.model_dump(mode="json"))
    else:
        render.console().print(render.job_table(job))
    return 0


async def kill_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid jobs kill ID``."""
    job = await grid.client.kill_job(args.id)
    render.console().print(f"job {job.id} {job.state}")
    return 0
