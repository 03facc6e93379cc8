"""``podgrid monitoring serve``: run the monitoring registry until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from pydantic import ValidationError

from podgrid._cmd_args import add_https_flags, host_port, https_values
from podgrid.config import (
    ConfigError,
    ConfigSourceError,
    default_ldif,
    environment,
    resolve,
    setup_logging,
)
from podgrid.config.runtime import capture_signals, write_private_file
from podgrid.config.settings import PodSettings
from podgrid.errors import PodGridError
from podgrid.https import PlainHTTPRefused, TLSFilesError
from podgrid.monitoring.registries import split_urls
from podgrid.monitoring.service import run_registry
from podgrid.monitoring.settings import DEFAULT_UDP_PORT, RegistrySettings

log = structlog.get_logger("podgrid.monitoring")

TOKEN_ENV = environment.REGISTRY_TOKEN
TOKEN_FILE_NAME = "registry.token"  # noqa: S105 (a file name)
APMON_PASSWORD_FILE_NAME = "apmon.password"  # noqa: S105 (a file name)


class UsageError(PodGridError, ValueError):
    """Bad flags or files: exit code 2."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``monitoring serve`` to the command tree."""
    group = sub.add_parser("monitoring", help="the monitoring registry (MonALISA-compatible)")
    commands = group.add_subparsers(dest="monitoring_command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve", help="run the registry: ApMon UDP ingest, HTTP publish, REST query, dashboard"
    )
    serve.add_argument(
        "--config",
        default=None,
        help="ldap://host:port/base or an .ldif path (default: the packaged LDIF)",
    )
    serve.add_argument(
        "--http", type=host_port, default=None, help="default: the address of podRegistryURL"
    )
    add_https_flags(serve)
    serve.add_argument("--udp", type=host_port, default=("127.0.0.1", DEFAULT_UDP_PORT))
    serve.add_argument("--farm", default="podgrid", help="farm name of data received here")
    serve.add_argument(
        "--apmon-password-file",
        type=Path,
        default=None,
        help=f"the password ApMon senders must use (default: ${environment.APMON_PASSWORD}, "
        f"else <state dir>/{APMON_PASSWORD_FILE_NAME}, made on first start)",
    )
    serve.add_argument(
        "--open-apmon",
        action="store_true",
        help="accept ApMon datagrams without a password: anyone who can reach the UDP port "
        "can then publish (PoD servers included)",
    )
    serve.add_argument(
        "--token-file", type=Path, default=None, help="accepted publish tokens, one per line"
    )
    serve.add_argument(
        "--max-waiters",
        type=int,
        default=None,
        help="long-polls parked at most, 503 + Retry-After past it (default: "
        "podRegistryMaxWaiters, else derived from the fd budget)",
    )
    serve.add_argument(
        "--fd-budget",
        type=int,
        default=None,
        help="connections held at most (default: podRegistryFdBudget, else the fd limit, raised "
        "to the hard limit at start, less a reserve)",
    )
    serve.add_argument(
        "--max-wait",
        type=float,
        default=None,
        help="seconds one long-poll is held at most (default: podRegistryMaxWait, else 60)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="listen with SO_REUSEPORT (several registry processes on one HTTP port)",
    )
    serve.add_argument("--state-dir", type=Path, default=None)
    serve.add_argument(
        "--log-format", dest="service_log_format", choices=["json", "console"], default="json"
    )
    serve.set_defaults(handler=serve_command)


def _read_tokens(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--token-file {path}: cannot read ({e})") from e
    tokens = {line.strip() for line in text.splitlines() if line.strip()}
    if not tokens:
        raise UsageError(f"--token-file {path}: holds no token")
    return tokens


def _own_secret(state_dir: Path, name: str, event: str) -> str:
    """The secret in ``<state dir>/<name>``, created (mode 0600) when missing."""
    path = state_dir / name
    if path.is_file():
        secret = path.read_text(encoding="utf-8").strip()
        if secret:
            return secret
    secret = secrets.token_urlsafe(32)
    write_private_file(path, secret + "\n")
    log.info(event, path=str(path))
    return secret


def _apmon_password(args: argparse.Namespace, state_dir: Path) -> str | None:
    """The ApMon password: the file, the environment, or the state dir's own (or none)."""
    if args.open_apmon:
        log.warning("registry.apmon_open", why="--open-apmon: datagrams need no password")
        return None
    if args.apmon_password_file is not None:
        try:
            password: str = args.apmon_password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--apmon-password-file {args.apmon_password_file}: {e}") from e
        if not password:
            raise UsageError(f"--apmon-password-file {args.apmon_password_file}: it is empty")
        return password
    from_env = os.environ.get(environment.APMON_PASSWORD, "").strip()
    return from_env or _own_secret(state_dir, APMON_PASSWORD_FILE_NAME, "registry.apmon_created")


def _http_of(pod: PodSettings) -> tuple[str, int]:
    """Where podRegistryURL says the registry listens (the first, when it lists several)."""
    url = urlsplit(split_urls(str(pod.registry_url))[0])
    default_port = 443 if url.scheme == "https" else 80
    return url.hostname or "127.0.0.1", url.port or default_port


def _capacity(args: argparse.Namespace, pod: PodSettings) -> dict[str, Any]:
    """Capacity settings: the flags, else ``ou=Config``'s attributes, else the defaults."""
    values: dict[str, Any] = {
        "max_waiters": args.max_waiters or pod.registry_max_waiters,
        "fd_budget": args.fd_budget or pod.registry_fd_budget,
        "reuse_port": args.reuse_port,
    }
    max_wait = args.max_wait if args.max_wait is not None else pod.registry_max_wait_s
    if max_wait is not None:
        values["max_wait_s"] = max_wait
    return values


def build_settings(args: argparse.Namespace) -> RegistrySettings:
    """Settings from the parsed flags and the environment; UsageError on bad input."""
    tokens: set[str] = set()
    if args.token_file is not None:
        tokens |= _read_tokens(args.token_file)
    if os.environ.get(TOKEN_ENV, "").strip():
        tokens.add(os.environ[TOKEN_ENV].strip())
    extra = {} if args.state_dir is None else {"state_dir": args.state_dir}
    pod = resolve(args.config or default_ldif()).settings
    http = args.http or _http_of(pod)
    try:
        settings = RegistrySettings(
            farm=args.farm,
            http_host=http[0],
            http_port=http[1],
            udp_host=args.udp[0],
            udp_port=args.udp[1],
            **_capacity(args, pod),
            **extra,
            **https_values(args),
        )
    except ValidationError as e:
        raise UsageError(str(e)) from e
    if not tokens:
        tokens.add(_own_secret(settings.state_dir, TOKEN_FILE_NAME, "registry.token_created"))
    password = _apmon_password(args, settings.state_dir)
    return settings.model_copy(
        update={"publish_tokens": frozenset(tokens), "apmon_password": password}
    )


async def serve(settings: RegistrySettings) -> None:
    """Run the registry until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    with capture_signals(lambda _sig: stop.set()):
        async with run_registry(settings):
            await stop.wait()
            log.info("registry.stopping")


def serve_command(args: argparse.Namespace) -> int:
    """Handler of ``podgrid monitoring serve``."""
    setup_logging(args.service_log_format, "INFO")
    try:
        settings = build_settings(args)
    except ConfigSourceError as e:
        print(f"podgrid monitoring serve: {e}", file=sys.stderr)
        return 1
    except (UsageError, OSError, ConfigError) as e:
        print(f"podgrid monitoring serve: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except (PlainHTTPRefused, TLSFilesError) as e:
        print(f"podgrid monitoring serve: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        log.error("registry.start_failed", error=str(e))
        return 1
    return 0
