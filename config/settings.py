"""Typed PoD Grid settings and the one mapping between LDAP attribute names and fields.

Values reach :class:`PodSettings` one attribute at a time through :func:`convert_value`, so a
bad value is reported with the DN, the attribute and the value it came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from podgrid.config.errors import ConfigValueError


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a non-numeric or out-of-range port
    except ValueError as e:
        raise ValueError("an http:// or https:// URL with a valid port") from e
    return value.rstrip("/")


_URL_SEPARATORS = re.compile(r"[,\s]+")


def split_registry_urls(text: str) -> list[str]:
    """The URLs of a registry list (commas or whitespace between them), in order, once each."""
    urls: list[str] = []
    for part in _URL_SEPARATORS.split(text.strip()):
        url = part.rstrip("/")
        if url and url not in urls:
            urls.append(url)
    return urls


def _http_urls(value: str) -> str:
    urls = split_registry_urls(value)
    if not urls:
        raise ValueError("one or more http:// or https:// URLs")
    return ",".join(_http_url(url) for url in urls)


def _host(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a host name without spaces")
    return value


def _word(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a name without spaces")
    return value


def _sbatch_option(value: str) -> str:
    if not value.startswith("--") or any(c in value for c in "\r\n\0"):
        raise ValueError("an sbatch option on one line, starting with --")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "\r\n\0"):
        raise ValueError("an absolute path")
    return value


Seconds = Annotated[int, Field(ge=0)]
PositiveSeconds = Annotated[int, Field(ge=1)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
HttpUrls = Annotated[str, AfterValidator(_http_urls)]  # one string: "url1,url2,..."
Host = Annotated[str, AfterValidator(_host)]
Word = Annotated[str, AfterValidator(_word)]
SbatchOption = Annotated[str, AfterValidator(_sbatch_option)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
Fallback = Literal["batch", "exit"]


class PodSettings(BaseModel):
    """The effective pod* values for one (site, CE); durations in seconds.

    The defaults equal ``ou=Config`` of the embedded LDIF; they apply only to attributes
    that no level of the hierarchy sets.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    poll_interval_s: PositiveSeconds = 5
    poll_duration_s: Seconds = 60
    publish_interval_s: PositiveSeconds = 2
    attach_timeout_s: PositiveSeconds = 30
    server_idle_timeout_s: Seconds = 1800
    worker_idle_timeout_s: Seconds = 300
    agent_ttl_s: Seconds = 86400
    fallback: Fallback = "batch"
    # Every registry of the grid (podRegistryURL may have several values, or a list in one):
    # publishers send to all of them, agents spread over them and fail over.
    registry_url: HttpUrls = "http://127.0.0.1:8885"
    masterqueue_url: HttpUrl = "http://127.0.0.1:8886"
    master_hosts: list[Host] = Field(default_factory=lambda: ["localhost"])
    config_refresh_s: PositiveSeconds = 60
    # The Slurm backend of the site factory (read by ``podgrid site run --backend slurm``).
    slurm_partition: Word | None = None
    slurm_account: Word | None = None
    slurm_options: list[SbatchOption] = Field(default_factory=list)
    slurm_env_script: AbsolutePath | None = None
    # The registry's capacity (read by ``podgrid monitoring serve``; None: derived at start).
    registry_max_waiters: Annotated[int, Field(ge=1)] | None = None
    registry_fd_budget: Annotated[int, Field(ge=1)] | None = None
    registry_max_wait_s: Annotated[int, Field(ge=0, le=3600)] | None = None


# LDAP attribute name -> PodSettings field: the only place the two spellings meet.
ATTRIBUTE_FIELDS: dict[str, str] = {
    "podPollInterval": "poll_interval_s",
    "podPollDuration": "poll_duration_s",
    "podPublishInterval": "publish_interval_s",
    "podAttachTimeout": "attach_timeout_s",
    "podServerIdleTimeout": "server_idle_timeout_s",
    "podWorkerIdleTimeout": "worker_idle_timeout_s",
    "podAgentTTL": "agent_ttl_s",
    "podFallback": "fallback",
    "podRegistryURL": "registry_url",
    "podMasterQueueURL": "masterqueue_url",
    "podMasterHosts": "master_hosts",
    "podConfigRefresh": "config_refresh_s",
    "podSlurmPartition": "slurm_partition",
    "podSlurmAccount": "slurm_account",
    "podSlurmOption": "slurm_options",
    "podSlurmEnvScript": "slurm_env_script",
    "podRegistryMaxWaiters": "registry_max_waiters",
    "podRegistryFdBudget": "registry_fd_budget",
    "podRegistryMaxWait": "registry_max_wait_s",
}
FIELD_ATTRIBUTES: dict[str, str] = {f: a for a, f in ATTRIBUTE_FIELDS.items()}
MULTI_VALUED: frozenset[str] = frozenset({"master_hosts", "slurm_options"})
JOINED: frozenset[str] = frozenset({"registry_url"})  # several values read as one list
_NOT_INTEGER: frozenset[str] = frozenset(
    {
        "fallback",
        "registry_url",
        "masterqueue_url",
        "slurm_partition",
        "slurm_account",
        "slurm_env_script",
    }
)
_INTEGER_TEXT = re.compile(r"-?[0-9]+")

_EXPECTED: dict[str, str] = {
    "poll_interval_s": "an integer number of seconds >= 1",
    "publish_interval_s": "an integer number of seconds >= 1",
    "attach_timeout_s": "an integer number of seconds >= 1",
    "config_refresh_s": "an integer number of seconds >= 1",
    "fallback": "one of 'batch', 'exit'",
    "registry_url": "one or more http:// or https:// URLs with a host",
    "masterqueue_url": "an http:// or https:// URL with a host",
    "master_hosts": "host names without spaces",
    "slurm_partition": "a partition name without spaces",
    "slurm_account": "an account name without spaces",
    "slurm_options": "sbatch options, one per value, each starting with --",
    "slurm_env_script": "an absolute path",
    "registry_max_waiters": "an integer number of long-polls >= 1",
    "registry_fd_budget": "an integer number of connections >= 1",
    "registry_max_wait_s": "an integer number of seconds between 0 and 3600",
}


def expected(field: str) -> str:
    """What a value of ``field`` must look like, in words, for error messages."""
    return _EXPECTED.get(field, "an integer number of seconds >= 0")


def convert_value(field: str, values: Sequence[object], dn: str) -> Any:
    """Turn the raw value(s) of one attribute of entry ``dn`` into the field's type.

    Integers are read as LDAP's INTEGER syntax reads them: ``"5"`` and ``5`` pass, ``"5.0"``,
    ``"five"`` and ``True`` do not.
    """
    attribute = FIELD_ATTRIBUTES[field]
    shown: object = list(values) if len(values) != 1 else values[0]
    if field in MULTI_VALUED:
        raw: object = list(values)
    elif field in JOINED and len(values) > 1 and all(isinstance(v, str) for v in values):
        raw = ",".join(str(v) for v in values)
    elif len(values) != 1:
        raise ConfigValueError(dn, attribute, shown, "a single value")
    else:
        raw = values[0]
    is_integer = field not in _NOT_INTEGER | MULTI_VALUED
    if (
        isinstance(raw, bool)
        or (isinstance(raw, str) and raw.strip() != raw)
        or (is_integer and not isinstance(raw, int) and not _INTEGER_TEXT.fullmatch(str(raw)))
    ):
        raise ConfigValueError(dn, attribute, shown, expected(field))
    try:
        # One field through the model itself: its type and constraints live in one place.
        return getattr(PodSettings.model_validate({field: raw}), field)
    except ValidationError as e:
        raise ConfigValueError(dn, attribute, shown, expected(field)) from e
