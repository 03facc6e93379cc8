"""The argparse value types every ``podgrid`` command shares (stdlib only: cheap to import).

Each raises :class:`argparse.ArgumentTypeError` with the value given and what was expected;
argparse adds the flag, so a user reads e.g.
``podgrid: error: argument --http: '::1:80': expected HOST:PORT (an IPv6 host in brackets:
[::1]:8080) with a port from 0 to 65535``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_PORT = 65535

_HOST_PORT_HINT = "HOST:PORT (an IPv6 host in brackets: [::1]:8080) with a port from 0 to 65535"
_DIGITS = re.compile(r"[0-9]+")


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → ``(host, port)``; port 0 picks a free port.

    The host is returned without brackets (``[::1]:80`` → ``("::1", 80)``); an IPv6 address
    without brackets is refused, since its last group could not be told from the port.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ok = ":" in host
    else:
        ok = ":" not in host and "[" not in host and "]" not in host
    if not (ok and sep and host.strip() == host and host and _DIGITS.fullmatch(port)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected {_HOST_PORT_HINT}")
    if int(port) > MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected {_HOST_PORT_HINT} (port {int(port)} is too large)"
        )
    return host, int(port)


def positive_int(text: str) -> int:
    """A whole number >= 1 (digits only: no sign, no spaces, no ``1e3``)."""
    if not _DIGITS.fullmatch(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return int(text)


def _seconds(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds {bound}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (``1.5``)."""
    return _seconds(text, zero_ok=False)


def non_negative_seconds(text: str) -> float:
    """A finite number of seconds >= 0 (``0`` allowed: e.g. no grace period)."""
    return _seconds(text, zero_ok=True)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """A type accepting a whole number from ``low`` to ``high`` (inclusive)."""

    def whole_number(text: str) -> int:
        if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a whole number from {low} to {high}"
            )
        return int(text)

    whole_number.__name__ = f"int_{low}_to_{high}"
    return whole_number


__all__ = [
    "MAX_PORT",
    "host_port",
    "int_range",
    "non_negative_seconds",
    "positive_int",
    "positive_seconds",
]


def add_https_flags(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert``, ``--tls-key`` and ``--insecure-http`` of every command that serves HTTP."""
    parser.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS: PEM certificate")
    parser.add_argument("--tls-key", type=Path, default=None, help="its PEM private key")
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on an address other than loopback (tokens travel in clear)",
    )


def https_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings fields those flags set."""
    return {"tls_cert": args.tls_cert, "tls_key": args.tls_key, "insecure_http": args.insecure_http}
