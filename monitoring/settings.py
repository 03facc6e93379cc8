"""Typed settings of the registry service (validated once, at the edge)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from podgrid.config.runtime import default_state_dir

# Defaults, with their units in the names.
DEFAULT_HTTP_PORT = 8885
DEFAULT_UDP_PORT = 8884  # MonALISA's ApMon port
DEFAULT_SERIES_TTL_S = 300.0
DEFAULT_HISTORY_POINTS = 60
DEFAULT_MAX_SERIES = 100_000
DEFAULT_MAX_WAIT_S = 60.0
DEFAULT_MAX_PUBLISH_BYTES = 1024 * 1024
DEFAULT_MAX_METRIC_SERVERS = 500
DEFAULT_RETRY_AFTER_S = 5  # what a refused long-poll is told to wait (clients add jitter)


class RegistrySettings(BaseModel):
    """Everything the registry needs to run; ports 0 mean "pick a free one"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    farm: str = Field("podgrid", min_length=1, pattern=r"^[^/|*\s]+$")
    http_host: str = "127.0.0.1"
    http_port: int = Field(DEFAULT_HTTP_PORT, ge=0, le=65535)
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) to serve HTTPS with")
    tls_key: Path | None = Field(None, description="its PEM private key")
    insecure_http: bool = Field(False, description="serve plain HTTP on a non-loopback address")
    udp_host: str = "127.0.0.1"
    udp_port: int = Field(DEFAULT_UDP_PORT, ge=0, le=65535)
    apmon_password: str | None = None
    publish_tokens: frozenset[str] = frozenset()
    series_ttl_s: float = Field(DEFAULT_SERIES_TTL_S, gt=0)
    history_points: int = Field(DEFAULT_HISTORY_POINTS, ge=1, le=100_000)
    max_series: int = Field(DEFAULT_MAX_SERIES, ge=1)
    max_wait_s: float = Field(DEFAULT_MAX_WAIT_S, ge=0, le=3600)
    max_waiters: int | None = Field(
        None, ge=1, description="long-polls parked at once (default: derived from fd_budget)"
    )
    fd_budget: int | None = Field(
        None, ge=1, description="connections held at once (default: the fd limit less a reserve)"
    )
    reuse_port: bool = Field(False, description="SO_REUSEPORT: several processes on one port")
    retry_after_s: int = Field(DEFAULT_RETRY_AFTER_S, ge=1, le=3600)
    max_publish_bytes: int = Field(DEFAULT_MAX_PUBLISH_BYTES, ge=1024)
    max_metric_servers: int = Field(DEFAULT_MAX_METRIC_SERVERS, ge=1)
    state_dir: Path = Field(default_factory=default_state_dir)
