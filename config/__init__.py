"""Typed settings for every PoD Grid component.

The LDAP-style configuration hierarchy (read with ldap3 from a real directory, or from an
LDIF file as the embedded default), the server-request config parser (TOML and AliEn JDL),
and the small shared plumbing: structlog set-up and the instrumented tenacity retry policy.
"""

from podgrid.config.errors import ConfigError, ConfigSourceError, ConfigValueError
from podgrid.config.hierarchy import (
    BUILTIN_DEFAULT,
    ResolvedConfig,
    default_ldif,
    resolve,
    schema_file,
)
from podgrid.config.logs import LogFormat, setup_logging
from podgrid.config.refresher import Change, ConfigRefresher
from podgrid.config.request import (
    DEFAULT_MAX_WORKERS_CAP,
    RequestFormat,
    ServerRequest,
    WorkerSpec,
    load_request,
    parse_request,
)
from podgrid.config.request_errors import RequestError, RequestIssue
from podgrid.config.retry import retry_policy, set_testing
from podgrid.config.settings import ATTRIBUTE_FIELDS, PodSettings
from podgrid.config.units import UnitError, format_duration, parse_duration_s, parse_memory_mb

__all__ = [
    "ATTRIBUTE_FIELDS",
    "BUILTIN_DEFAULT",
    "DEFAULT_MAX_WORKERS_CAP",
    "Change",
    "ConfigError",
    "ConfigRefresher",
    "ConfigSourceError",
    "ConfigValueError",
    "LogFormat",
    "PodSettings",
    "RequestError",
    "RequestFormat",
    "RequestIssue",
    "ResolvedConfig",
    "ServerRequest",
    "UnitError",
    "WorkerSpec",
    "default_ldif",
    "format_duration",
    "load_request",
    "parse_duration_s",
    "parse_memory_mb",
    "parse_request",
    "resolve",
    "retry_policy",
    "schema_file",
    "set_testing",
    "setup_logging",
]
