"""Every environment variable PoD Grid reads or sets, in one table.

Agents, brokers, the master queue and the ``podgrid`` commands all use these names, so they are
defined once here (import ``podgrid.config.environment``; stdlib only, cheap to import).
:data:`VARIABLES` maps each name to its one-line description (docs/design.md lists them too).
Tests and benchmarks have their own (``PODGRID_TEST_MYSQL_URL``, ``PODGRID_BENCH_*``); those
are not part of the product and are not listed here.
"""

from __future__ import annotations

from typing import Final

VARIABLES: Final[dict[str, str]] = {}
"""Variable name → what it holds and who reads it."""


def _variable(name: str, description: str) -> str:
    VARIABLES[name] = description
    return name


# Read by the user commands, brokers and agents.
URL: Final = _variable(
    "PODGRID_URL", "the master queue's URL (user commands, `podgrid token`, brokers)"
)
TOKEN: Final = _variable(
    "PODGRID_TOKEN", "the bearer token: a user's, an agent's, a broker's or the admin's"
)
REGISTRY_URL: Final = _variable(
    "PODGRID_REGISTRY_URL", "where a broker publishes: udp://HOST:PORT or http(s)://HOST:PORT"
)
REGISTRY_TOKEN: Final = _variable(
    "PODGRID_REGISTRY_TOKEN", "a publish token the registry accepts (enables HTTP /publish)"
)
APMON_PASSWORD: Final = _variable(
    "PODGRID_APMON_PASSWORD", "the password of every ApMon datagram sent to or taken by a registry"
)
SIGN_SECRET: Final = _variable(
    "PODGRID_SIGN_SECRET", "a broker's per-request secret for POST /v1/sign (set by the launcher)"
)
CA_FILE: Final = _variable(
    "PODGRID_CA_FILE", "PEM CAs trusted for PoD Grid's HTTPS services, besides the system's"
)
SITE: Final = _variable("PODGRID_SITE", "the grid site of a job agent or site factory")
CE: Final = _variable("PODGRID_CE", "the computing element of a job agent or site factory")
SLOT_PACKAGES: Final = _variable(
    "PODGRID_SLOT_PACKAGES", "comma-separated packages a batch slot offers (job agents)"
)

# Set by a job agent for the batch job it runs.
JOB_ID: Final = _variable("PODGRID_JOB_ID", "the id of the batch job (set for the job)")
AGENT_ID: Final = _variable("PODGRID_AGENT_ID", "the agent running the batch job (set for the job)")
SANDBOX: Final = _variable(
    "PODGRID_SANDBOX", "the batch job's private working directory (set for the job)"
)

__all__ = [
    "AGENT_ID",
    "APMON_PASSWORD",
    "CA_FILE",
    "CE",
    "JOB_ID",
    "REGISTRY_TOKEN",
    "REGISTRY_URL",
    "SANDBOX",
    "SIGN_SECRET",
    "SITE",
    "SLOT_PACKAGES",
    "TOKEN",
    "URL",
    "VARIABLES",
]
