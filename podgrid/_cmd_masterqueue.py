"""``podgrid masterqueue serve``: run the master queue until SIGTERM/SIGINT, then exit 0.

On SIGTERM it stops accepting connections, finishes the answers in flight, stops its loops
and closes the database. Brokers it launched are separate processes (their own sessions) and
keep running; they report to whichever master queue serves the same database next.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from pydantic import ValidationError

from podgrid._cmd_args import add_https_flags, host_port, https_values
from podgrid.config import environment, setup_logging
from podgrid.config.errors import ConfigError
from podgrid.config.runtime import capture_signals
from podgrid.https import PlainHTTPRefused, TLSFilesError
from podgrid.masterqueue.errors import MasterQueueError
from podgrid.masterqueue.service import LauncherUnavailable, run_masterqueue
from podgrid.masterqueue.settings import DEFAULT_HTTP_PORT, MasterQueueSettings

log = structlog.get_logger("podgrid.masterqueue")


def register(sub: Any) -> None:
    """Add ``masterqueue serve`` to the command tree."""
    group = sub.add_parser("masterqueue", help="the master queue (requests, batch jobs, launcher)")
    commands = group.add_subparsers(dest="masterqueue_command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the master queue's HTTP API and its loops")
    serve.add_argument("--http", type=host_port, default=("127.0.0.1", DEFAULT_HTTP_PORT))
    add_https_flags(serve)
    serve.add_argument("--db", default=None, help="database URL (default: SQLite in state dir)")
    serve.add_argument("--config", default=None, help="ldap://host:port/base or an .ldif path")
    serve.add_argument("--state-dir", type=Path, default=None)
    serve.add_argument("--launcher", choices=["local", "ssh", "slurm", "none"], default="local")
    serve.add_argument("--slurm-partition", default=None, help="slurm launcher: partition")
    serve.add_argument("--slurm-account", default=None, help="slurm launcher: account")
    serve.add_argument(
        "--slurm-option",
        action="append",
        default=None,
        metavar="OPTION",
        help="slurm launcher: an extra sbatch option (repeatable), e.g. --qos=broker",
    )
    serve.add_argument("--registry-url", default=None, help="default: podRegistryURL")
    serve.add_argument("--public-url", default=None, help="URL brokers use to reach us")
    serve.add_argument("--broker-command", default=None, help="default: podgrid broker serve")
    serve.add_argument(
        "--master-host", action="append", default=None, help="ssh: overrides podMasterHosts"
    )
    serve.add_argument("--ssh-port", type=int, default=None)
    serve.add_argument("--ssh-user", default=None)
    serve.add_argument("--ssh-key", type=Path, action="append", default=None)
    serve.add_argument("--ssh-known-hosts", type=Path, default=None)
    serve.add_argument("--db-pool-size", type=int, default=None, help="default: 10")
    serve.add_argument(
        "--warm-brokers",
        type=int,
        default=None,
        metavar="N",
        help="local launcher: keep N brokers started with Dask imported (default 0)",
    )
    serve.add_argument("--broker-heartbeat-timeout", type=float, default=None, metavar="SECONDS")
    serve.add_argument(
        "--log-format", dest="service_log_format", choices=["json", "console"], default="json"
    )
    serve.set_defaults(handler=serve_command)


def build_settings(args: argparse.Namespace) -> MasterQueueSettings:
    """Settings from the parsed flags (ValidationError on bad values)."""
    values: dict[str, Any] = {
        "http_host": args.http[0],
        "http_port": args.http[1],
        "launcher": args.launcher,
        "config_source": args.config,
        "registry_url": args.registry_url,
        "public_url": args.public_url,
        **https_values(args),
    }
    optional = {
        "db_url": args.db,
        "db_pool_size": args.db_pool_size,
        "warm_brokers": args.warm_brokers,
        "slurm_partition": args.slurm_partition,
        "slurm_account": args.slurm_account,
        "slurm_options": args.slurm_option,
        "master_hosts": args.master_host,
        "ssh_port": args.ssh_port,
        "ssh_user": args.ssh_user,
        "ssh_client_keys": args.ssh_key,
        "ssh_known_hosts": args.ssh_known_hosts,
        "state_dir": args.state_dir,
        "broker_heartbeat_timeout_s": args.broker_heartbeat_timeout,
        "broker_command": shlex.split(args.broker_command) if args.broker_command else None,
        "apmon_password": os.environ.get(environment.APMON_PASSWORD) or None,
        "ca_file": os.environ.get(environment.CA_FILE) or None,
    }
    values.update({k: v for k, v in optional.items() if v is not None})
    return MasterQueueSettings(**values)


async def serve(settings: MasterQueueSettings) -> None:
    """Run the master queue until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    with capture_signals(lambda _sig: stop.set()):
        async with run_masterqueue(settings) as running:
            if running.admin_token is not None:
                print(f"admin token written to {settings.admin_token_path}", file=sys.stderr)
            await stop.wait()
            log.info("masterqueue.stopping")


def serve_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid masterqueue serve``."""
    setup_logging(args.service_log_format, "INFO")
    try:
        settings = build_settings(args)
    except ValidationError as e:
        print(f"podgrid masterqueue serve: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except (LauncherUnavailable, ConfigError, PlainHTTPRefused, TLSFilesError) as e:
        print(f"podgrid masterqueue serve: {e}", file=sys.stderr)
        return 2
    except (OSError, MasterQueueError, sa.exc.SQLAlchemyError) as e:
        log.error("masterqueue.start_failed", error=str(e))
        return 1
    return 0
