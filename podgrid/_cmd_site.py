"""``podgrid site run``: the site pilot factory, keeping N job agents alive on this site.

``--backend local`` runs the agents as subprocesses here; ``--backend slurm`` submits them as
Slurm jobs: the partition, account, extra ``#SBATCH`` options and environment script come from
the CE's entry in the configuration hierarchy (``podSlurm*``), flags override them, and the
slot's wall time, cores and memory (``--slot-ttl``, ``--cores``, ``--memory``) become the job's
``--time``, ``--cpus-per-task`` and ``--mem`` (the agent reads them back from Slurm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from podgrid._cmd_args import (
    add_https_flags,
    host_port,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from podgrid._cmd_jobagent import DEFAULT_SITE
from podgrid.config import default_ldif, environment, setup_logging
from podgrid.config.errors import ConfigError
from podgrid.config.hierarchy import resolve
from podgrid.config.runtime import capture_signals, default_state_dir
from podgrid.https import PlainHTTPRefused, TLSFilesError, listen_tls
from podgrid.jobagent.factory import AgentSpec, Backend, LocalBackend, SiteFactory, agent_command
from podgrid.jobagent.service import serve_http
from podgrid.jobagent.slurm import DEFAULT_SIGNAL_GRACE_S, SlurmBackend, SlurmJobOptions

# On Slurm these describe the job (sbatch flags); the agent reads them back from Slurm.
SLURM_JOB_FLAGS = frozenset({"slot_ttl", "cores", "memory"})
DEFAULT_SLURM_SUBMIT_INTERVAL_S = 2.0

# Flags handed unchanged to every agent (name on the site command → agent flag).
PASSED: dict[str, str] = {
    "ce": "--ce",
    "config": "--config",
    "slot_ttl": "--slot-ttl",
    "cores": "--cores",
    "memory": "--memory",
    "registry_url": "--registry-url",
    "masterqueue_url": "--masterqueue-url",
    "registry_publish": "--registry-publish",
    "config_refresh": "--config-refresh",
    "grace": "--grace",
    "payload_user": "--payload-user",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``site run`` to the command tree."""
    group = sub.add_parser("site", help="the site pilot factory (keep N agents alive)")
    commands = group.add_subparsers(dest="site_command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="keep N job agents alive, replacing those that exit")
    run.add_argument("--agents", type=positive_int, required=True)
    run.add_argument("--backend", choices=["local", "slurm"], default="local")
    run.add_argument("--site", default=os.environ.get(environment.SITE, DEFAULT_SITE))
    run.add_argument("--ce", default=os.environ.get(environment.CE))
    run.add_argument("--config", default=None, help="ldap://host:port/base or an .ldif path")
    run.add_argument("--slot-ttl", type=positive_seconds, default=None)
    run.add_argument("--cores", type=positive_int, default=None)
    run.add_argument("--memory", type=positive_int, default=None, help="MB")
    run.add_argument("--registry-url", default=None)
    run.add_argument("--masterqueue-url", default=None)
    run.add_argument("--registry-publish", default=None)
    run.add_argument("--config-refresh", type=positive_seconds, default=None)
    run.add_argument("--grace", type=non_negative_seconds, default=None, help="batch job grace (s)")
    run.add_argument(
        "--payload-user",
        default=None,
        metavar="USER",
        help="agents run workers and batch jobs as this user (the agents must run as root)",
    )
    run.add_argument("--max-restarts-per-minute", type=positive_int, default=10)
    run.add_argument("--state-dir", type=Path, default=None)
    run.add_argument("--http", type=host_port, default=None, help="serve /metrics and /healthz")
    add_https_flags(run)
    slurm = run.add_argument_group("--backend slurm (default: the CE's podSlurm* attributes)")
    slurm.add_argument("--partition", default=None, help="overrides podSlurmPartition")
    slurm.add_argument("--account", default=None, help="overrides podSlurmAccount")
    slurm.add_argument(
        "--sbatch-option",
        action="append",
        default=None,
        metavar="OPTION",
        help="an extra sbatch option (repeatable; replaces podSlurmOption)",
    )
    slurm.add_argument("--env-script", default=None, help="overrides podSlurmEnvScript")
    slurm.add_argument(
        "--max-queued", type=positive_int, default=None, help="agents waiting in the queue at most"
    )
    slurm.add_argument(
        "--submit-interval",
        type=non_negative_seconds,
        default=DEFAULT_SLURM_SUBMIT_INTERVAL_S,
        help="seconds between two sbatch calls",
    )
    slurm.add_argument(
        "--signal-grace",
        type=positive_int,
        default=DEFAULT_SIGNAL_GRACE_S,
        help="SIGTERM the agent this many seconds before its time limit (--signal=B:TERM@N)",
    )
    run.add_argument(
        "--log-format", dest="service_log_format", choices=["json", "console"], default="json"
    )
    run.set_defaults(handler=run_command)


def spec_maker(args: argparse.Namespace, state_dir: Path) -> Callable[[int], AgentSpec]:
    """A function building the n-th agent's :class:`AgentSpec` from the site's flags."""
    prefix = f"{args.site}-{uuid.uuid4().hex[:6]}"

    def make(n: int) -> AgentSpec:
        agent_id = f"{prefix}-{n:04d}"
        agent_dir = state_dir / "agents" / agent_id
        argv = [
            *agent_command(),
            "--site",
            args.site,
            "--agent-id",
            agent_id,
            "--state-dir",
            str(agent_dir),
        ]
        for name, flag in PASSED.items():
            value = getattr(args, name)
            if value is not None and not (args.backend == "slurm" and name in SLURM_JOB_FLAGS):
                argv += [flag, str(value)]
        return AgentSpec(agent_id, argv, dict(os.environ), agent_dir)

    return make


def slurm_options(args: argparse.Namespace, state_dir: Path) -> SlurmJobOptions:
    """The agents' job options: flags first, then the CE's ``podSlurm*`` attributes.

    ConfigError when the configuration cannot be read or holds a bad value.
    """
    pod = resolve(args.config or default_ldif(), args.site, args.ce).settings
    options = args.sbatch_option if args.sbatch_option is not None else pod.slurm_options
    return SlurmJobOptions(
        output_dir=state_dir / "slurm",
        partition=args.partition or pod.slurm_partition,
        account=args.account or pod.slurm_account,
        directives=tuple(options),
        env_script=args.env_script or pod.slurm_env_script,
        wall_time_s=args.slot_ttl if args.slot_ttl is not None else pod.agent_ttl_s,
        cpus=args.cores,
        memory_mb=args.memory,
        signal_grace_s=args.signal_grace,
    )


def _factory(args: argparse.Namespace, state_dir: Path) -> SiteFactory:
    on_slurm = args.backend == "slurm"
    backend: Backend = SlurmBackend(slurm_options(args, state_dir)) if on_slurm else LocalBackend()
    return SiteFactory(
        backend,
        agents=args.agents,
        make_spec=spec_maker(args, state_dir),
        state_dir=state_dir,
        max_restarts_per_min=args.max_restarts_per_minute,
        max_queued=args.max_queued if on_slurm else None,
        submit_interval_s=args.submit_interval if on_slurm else 0.0,
    )


async def _serve(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or default_state_dir() / "site" / args.site
    try:
        factory = _factory(args, state_dir)
    except ConfigError as e:
        print(f"podgrid: error: {e}", file=sys.stderr)
        return 2
    stopping = asyncio.Event()
    with capture_signals(lambda _sig: stopping.set()):
        if args.http is None:
            totals = await factory.run(stopping)
        else:
            status = lambda: {  # noqa: E731
                "site": args.site,
                "backend": args.backend,
                "running": len(factory.running),
                "queued": factory.queued,
                "submitted": factory.submitted,
                "failed": factory.failed,
                "refused": factory.refused,
            }
            context = listen_tls(
                args.http[0], args.tls_cert, args.tls_key, insecure_http=args.insecure_http
            )
            async with serve_http(args.http[0], args.http[1], status, context):
                totals = await factory.run(stopping)
    print(json.dumps({"site": args.site, "seconds": totals}))
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run the factory until SIGTERM/SIGINT; 0 after all agents were stopped."""
    setup_logging(args.service_log_format, "INFO")
    if environment.TOKEN not in os.environ:
        print(f"podgrid: error: {environment.TOKEN} must hold an agent token", file=sys.stderr)
        return 2
    if args.http is not None:
        try:  # refused before any agent is started
            listen_tls(args.http[0], args.tls_cert, args.tls_key, insecure_http=args.insecure_http)
        except (PlainHTTPRefused, TLSFilesError) as e:
            print(f"podgrid: error: {e}", file=sys.stderr)
            return 2
    return asyncio.run(_serve(args))
