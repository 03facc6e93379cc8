"""Builders of requests, jobs and slots for the master-queue tests."""

from __future__ import annotations

from typing import Any

from podgrid.config.request import ServerRequest, parse_request
from podgrid.protocol import JobSpec, SlotDescription

REQUEST_TOML = """\
[server]
name = "{name}"
min_workers = {min_workers}
max_workers = {max_workers}
max_wait = "{max_wait}"
ttl = "{ttl}"
[worker]
cores = 1
memory = "2GiB"
packages = ["ROOT::v6-32"]
"""


def request_text(
    name: str = "dimuon-scan",
    min_workers: int = 2,
    max_workers: int = 4,
    max_wait: str = "10m",
    ttl: str = "4h",
) -> str:
    """A TOML request as a user would write it."""
    return REQUEST_TOML.format(
        name=name, min_workers=min_workers, max_workers=max_workers, max_wait=max_wait, ttl=ttl
    )


def request(**kw: Any) -> tuple[ServerRequest, str]:
    """A parsed request and its source text."""
    text = request_text(**kw)
    return parse_request(text, fmt="toml"), text


def job(**kw: Any) -> JobSpec:
    """A batch job spec (``["true"]`` unless told otherwise)."""
    kw.setdefault("command", ["true"])
    return JobSpec(**kw)


def slot(agent_id: str = "agent-1", **kw: Any) -> SlotDescription:
    """A generous slot at site CERN unless told otherwise."""
    values: dict[str, Any] = {
        "site": "CERN",
        "ce": "ce01",
        "host": "wn001",
        "cores": 8,
        "memory_mb": 16_000,
        "ttl_s": 86_400,
        "packages": ("ROOT::v6-32",),
    }
    values.update(kw)
    return SlotDescription(agent_id=agent_id, **values)
