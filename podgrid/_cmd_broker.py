"""``podgrid broker serve``: the PoD server of one request, until it stops or SIGTERM.

The broker token comes from ``PODGRID_TOKEN`` (the launcher sets it). The master queue is
``--masterqueue``, else ``PODGRID_URL``, else ``podMasterQueueURL``; the registry is
``--registry``, else ``PODGRID_REGISTRY_URL``, else ``podRegistryURL`` (see
:mod:`podgrid.broker.settings` for UDP vs HTTP; ``PODGRID_REGISTRY_TOKEN`` enables HTTP publishing).
Exit codes: 0 the cluster ended normally (done, cancelled, expired, SIGTERM), 1 a runtime
failure (master queue unreachable at start, request already final, scheduler failure),
2 bad flags or environment.

``--warm`` (instead of ``--request-id``): a warm broker for the launcher's pool. It imports
everything (Dask included), then waits for its one request on stdin: one JSON line
``{"request_id": N, "masterqueue": URL, "env": {...}}``, ``env`` holding the variables a
launcher would have set (the broker token, the sign secret, ...): never in argv or on disk.
It then serves that request like a cold broker, and only that one. End of input before a
request (the master queue went away): exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import structlog
from pydantic import ValidationError

from podgrid._cmd_args import host_port, positive_seconds
from podgrid.broker.settings import BrokerSettings
from podgrid.config import ConfigError, environment, resolve, setup_logging
from podgrid.config.hierarchy import default_ldif
from podgrid.config.runtime import default_state_dir
from podgrid.errors import PodGridError

log = structlog.get_logger("podgrid.broker")

TOKEN_ENV, URL_ENV = environment.TOKEN, environment.URL
REGISTRY_ENV, REGISTRY_TOKEN_ENV = environment.REGISTRY_URL, environment.REGISTRY_TOKEN


class UsageError(PodGridError, ValueError):
    """Bad flags or environment: exit code 2."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``broker serve`` to the command tree."""
    group = sub.add_parser("broker", help="the PoD server (a Dask scheduler) of one request")
    commands = group.add_subparsers(dest="broker_command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="serve one request: scheduler, attach API, publish")
    which = serve.add_mutually_exclusive_group(required=True)
    which.add_argument("--request-id", type=int)
    which.add_argument(
        "--warm", action="store_true", help="start now, read the one request to serve on stdin"
    )
    serve.add_argument("--masterqueue", default=None, help="master-queue URL")
    serve.add_argument("--registry", default=None, help="udp://HOST:PORT or http(s)://HOST:PORT")
    serve.add_argument("--config", default=None, help="ldap://host:port/base URL or .ldif path")
    serve.add_argument("--http", type=host_port, default=("127.0.0.1", 0))
    serve.add_argument("--state-dir", type=Path, default=None)
    serve.add_argument("--publish-interval", type=positive_seconds, default=None, help="seconds")
    serve.add_argument("--attach-timeout", type=positive_seconds, default=None, help="seconds")
    serve.add_argument(
        "--log-format", dest="service_log_format", choices=["json", "console"], default="json"
    )
    serve.set_defaults(handler=serve_command)


def build_settings(args: argparse.Namespace) -> BrokerSettings:
    """BrokerSettings from flags and environment; UsageError on bad input."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(f"the broker token is missing: set {TOKEN_ENV}")
    url = args.masterqueue or os.environ.get(URL_ENV)
    if not url:
        try:
            url = resolve(args.config or default_ldif()).settings.masterqueue_url
        except ConfigError as e:
            raise UsageError(f"--config: {e}") from e
    try:
        return BrokerSettings(
            request_id=args.request_id,
            masterqueue_url=url,
            token=token,
            registry=args.registry or os.environ.get(REGISTRY_ENV) or None,
            registry_token=os.environ.get(REGISTRY_TOKEN_ENV) or None,
            apmon_password=os.environ.get(environment.APMON_PASSWORD) or None,
            config_source=args.config,
            http_host=args.http[0],
            http_port=args.http[1],
            state_dir=args.state_dir or default_state_dir(),
            publish_interval_s=args.publish_interval,
            attach_timeout_s=args.attach_timeout,
        )
    except ValidationError as e:
        raise UsageError(str(e)) from e


WARM_ENV_NAMES = frozenset(
    {
        TOKEN_ENV,
        environment.SIGN_SECRET,
        REGISTRY_ENV,
        REGISTRY_TOKEN_ENV,
        environment.APMON_PASSWORD,
        environment.CA_FILE,
    }
)
MAX_ASSIGNMENT_BYTES = 64 * 1024


def read_assignment(args: argparse.Namespace, line: bytes) -> None:
    """Take a warm broker's request from its stdin line (UsageError when it is not one)."""
    try:
        doc = json.loads(line)
        request_id, url, env = doc["request_id"], doc["masterqueue"], doc["env"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--warm: not an assignment on stdin: {e}") from e
    if not (isinstance(request_id, int) and isinstance(url, str) and isinstance(env, dict)):
        raise UsageError("--warm: the assignment needs request_id, masterqueue and env")
    unknown = set(env) - WARM_ENV_NAMES
    if unknown or not all(isinstance(v, str) for v in env.values()):
        raise UsageError(f"--warm: unexpected variables in the assignment: {sorted(unknown)}")
    os.environ.update(env)
    args.request_id, args.masterqueue = request_id, url


def serve_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid broker serve``."""
    from podgrid.broker.service import BrokerStartError, serve  # imports distributed: only here
    from podgrid.errors import CallFailed
    from podgrid.masterqueue.states import RequestState

    setup_logging(args.service_log_format, "INFO")
    if args.warm:
        # What a scheduler imports when it starts: its bokeh dashboard above all (~1-2 s).
        import distributed.dashboard.scheduler
        import distributed.http.scheduler.prometheus.core  # noqa: F401

        log.info("broker.warm", pid=os.getpid())
        line = sys.stdin.buffer.readline(MAX_ASSIGNMENT_BYTES)
        if not line:
            log.info("broker.warm_unused")  # the pool was closed before it got a request
            return 0
        try:
            read_assignment(args, line)
        except UsageError as e:
            print(f"podgrid broker serve: {e}", file=sys.stderr)
            return 2
        log.info("broker.assigned", request_id=args.request_id)
    try:
        settings = build_settings(args)
    except UsageError as e:
        print(f"podgrid broker serve: {e}", file=sys.stderr)
        return 2
    try:
        final = asyncio.run(serve(settings))
    except (BrokerStartError, CallFailed, ConfigError, OSError) as e:
        log.error("broker.start_failed", request_id=settings.request_id, error=str(e))
        return 1
    return 1 if final == RequestState.FAILED else 0
