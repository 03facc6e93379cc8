"""``podgrid jobagent run``: one extended job agent (xJA) on this batch slot until it ends."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path

from pydantic import ValidationError

from podgrid._cmd_args import (
    add_https_flags,
    host_port,
    https_values,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from podgrid.config import default_ldif, environment, setup_logging
from podgrid.config.errors import ConfigError
from podgrid.config.runtime import default_state_dir
from podgrid.https import listen_tls
from podgrid.jobagent.runner import run_agent
from podgrid.jobagent.settings import DEFAULT_GRACE_S, AgentSettings
from podgrid.jobagent.slot import SlotError, SlotFlags

TOKEN_ENV, REGISTRY_TOKEN_ENV = environment.TOKEN, environment.REGISTRY_TOKEN
SITE_ENV, CE_ENV = environment.SITE, environment.CE
DEFAULT_SITE = "Local"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``jobagent run`` to the command tree."""
    group = sub.add_parser("jobagent", help="the extended job agent (xJA) of a batch slot")
    commands = group.add_subparsers(dest="jobagent_command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", help="poll for PoD servers, attach as a Dask worker, or fall back to batch work"
    )
    run.add_argument("--site", default=os.environ.get(SITE_ENV, DEFAULT_SITE))
    run.add_argument("--ce", default=os.environ.get(CE_ENV))
    run.add_argument("--slot-ttl", type=positive_seconds, help="seconds left in the slot")
    run.add_argument("--cores", type=positive_int)
    run.add_argument("--memory", type=positive_int, help="MB")
    run.add_argument("--packages", nargs="*", default=None, help="packages the slot offers")
    run.add_argument("--config", default=None, help="ldap://host:port/base or an .ldif path")
    run.add_argument("--agent-id", default=None, help="default: <host>-<random>")
    run.add_argument("--http", type=host_port, default=None, help="serve /metrics and /healthz")
    add_https_flags(run)
    run.add_argument("--state-dir", type=Path, default=None)
    run.add_argument("--registry-url", default=None, help="overrides podRegistryURL")
    run.add_argument("--masterqueue-url", default=None, help="overrides podMasterQueueURL")
    run.add_argument("--registry-publish", default=None, help="udp://H:P or http(s)://H:P")
    run.add_argument(
        "--config-refresh", type=positive_seconds, default=None, help="overrides podConfigRefresh"
    )
    run.add_argument(
        "--grace", type=non_negative_seconds, default=DEFAULT_GRACE_S, help="batch job grace (s)"
    )
    run.add_argument(
        "--heartbeat", type=positive_seconds, default=None, help="broker probe period (s)"
    )
    run.add_argument("--no-longpoll", action="store_true", help="plain polling every y s")
    run.add_argument(
        "--no-fork-workers",
        action="store_true",
        help="start every worker as a new interpreter (no zygote with Dask imported)",
    )
    run.add_argument(
        "--payload-user",
        default=None,
        metavar="USER",
        help="run workers and batch jobs as this user (name or uid; the agent must be root)",
    )
    run.add_argument(
        "--log-format", dest="service_log_format", choices=["json", "console"], default="json"
    )
    run.set_defaults(handler=run_command)


def settings_from_args(args: argparse.Namespace) -> AgentSettings:
    """The agent's settings from flags and environment (ValueError/ValidationError if bad)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(f"{TOKEN_ENV} must hold an agent token")
    agent_id = args.agent_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    state_dir = args.state_dir or default_state_dir() / "agents" / agent_id
    extra = {"heartbeat_s": args.heartbeat} if args.heartbeat else {}
    return AgentSettings(
        agent_id=agent_id,
        site=args.site,
        ce=args.ce,
        config_source=args.config or default_ldif(),
        token=token,
        state_dir=state_dir,
        registry_url=args.registry_url,
        masterqueue_url=args.masterqueue_url,
        registry_publish=args.registry_publish,
        registry_token=os.environ.get(REGISTRY_TOKEN_ENV),
        apmon_password=os.environ.get(environment.APMON_PASSWORD) or None,
        config_refresh_s=args.config_refresh,
        http_host=args.http[0] if args.http else None,
        http_port=args.http[1] if args.http else 0,
        grace_s=args.grace,
        longpoll=False if args.no_longpoll else None,
        fork_workers=not args.no_fork_workers,
        payload_user=args.payload_user,
        **https_values(args),
        **extra,
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the agent; 0 after a clean exit, 2 for bad flags, 1 when it cannot start."""
    setup_logging(args.service_log_format, "INFO")
    try:
        settings = settings_from_args(args)
        flags = SlotFlags(args.cores, args.memory, args.slot_ttl, args.packages)
        if settings.http_host is not None:  # refused now rather than after the agent started
            listen_tls(
                settings.http_host,
                settings.tls_cert,
                settings.tls_key,
                insecure_http=settings.insecure_http,
            )
    except (ValueError, ValidationError) as e:
        print(f"podgrid: error: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_agent(settings, flags))
    except SlotError as e:
        print(f"podgrid: error: {e}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError) as e:
        print(f"podgrid: error: {e}", file=sys.stderr)
        return 1
