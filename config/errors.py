"""Errors of the configuration hierarchy, and the counter of errors a running component absorbed."""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter

from podgrid.errors import PodGridError

ErrorReason = Literal["invalid_value", "source_unreachable", "bad_source"]

CONFIG_ERRORS = Counter(
    "podgrid_config_errors_total",
    "Configuration loads that failed (the last good configuration was kept), by reason.",
    ["reason"],
)


class ConfigError(PodGridError):
    """Base of every configuration-hierarchy error."""

    reason: ErrorReason = "bad_source"


class ConfigValueError(ConfigError):
    """A pod* value that does not fit its type: names the DN, the attribute, the value and why."""

    reason: ErrorReason = "invalid_value"

    def __init__(self, dn: str, attribute: str, value: object, expected: str) -> None:
        self.dn = dn
        self.attribute = attribute
        self.value = value
        self.expected = expected
        super().__init__(
            f"{dn}: {attribute}={value!r} is invalid: expected {expected}",
        )


class ConfigSourceError(ConfigError):
    """The configuration source cannot be read (LDAP server unreachable, file missing or broken)."""

    def __init__(self, source: str, problem: str, *, unreachable: bool = False) -> None:
        self.source = source
        self.problem = problem
        self.reason = "source_unreachable" if unreachable else "bad_source"
        super().__init__(f"cannot read configuration from {source}: {problem}")


def count_error(error: ConfigError) -> None:
    """Count one failed load in ``podgrid_config_errors_total{reason}``."""
    CONFIG_ERRORS.labels(reason=error.reason).inc()
