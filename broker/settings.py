"""Typed settings of one broker (validated once, at the edge) and the broker's constants.

Registry target (``registry``): ``udp://host:port`` publishes ApMon datagrams (the default
transport, fire and forget, like PoD's own ApMon); ``http(s)://host:port`` publishes with
``POST /publish`` and the bearer token ``registry_token``. When it is not given, the broker
publishes over UDP to the host of ``podRegistryURL`` on :data:`DEFAULT_APMON_PORT` (the
ApMon port, MonALISA's default) — so a plain HTTP registry URL from the configuration
hierarchy works without an extra setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_APMON_PORT = 8884  # MonALISA's ApMon UDP port
CLUSTER = "PoD_Masters"  # the registry cluster every broker publishes in
LIFETIME_MARGIN_S = 30  # seconds a worker retires before its batch slot ends
MIN_LIFETIME_S = 60  # seconds of useful work a slot must still offer
SHUTDOWN_TIMEOUT_S = 10.0  # seconds for retiring workers and closing the scheduler
TOKEN_CACHE_TTL_S = 30.0  # seconds an accepted agent token stays trusted (= revocation delay)
TOKEN_NEGATIVE_TTL_S = 2.0  # seconds a refused agent token stays refused without asking again

RegistryTransport = Literal["udp", "http"]


class RegistryTarget(BaseModel):
    """Where and how the broker publishes."""

    model_config = ConfigDict(frozen=True)

    transport: RegistryTransport
    host: str
    port: int
    url: str

    @classmethod
    def parse(cls, value: str, *, default_udp_port: int = DEFAULT_APMON_PORT) -> RegistryTarget:
        """``udp://h:p`` → ApMon; ``http(s)://h:p`` → HTTP publish. ValueError otherwise."""
        parts = urlsplit(value)
        if parts.scheme not in ("udp", "http", "https") or not parts.hostname:
            raise ValueError(f"registry must be udp://HOST:PORT or http(s)://HOST:PORT: {value!r}")
        if parts.scheme == "udp":
            port = parts.port or default_udp_port
            return cls(transport="udp", host=parts.hostname, port=port, url=value)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(transport="http", host=parts.hostname, port=port, url=value.rstrip("/"))


class BrokerSettings(BaseModel):
    """Everything one broker needs; ``http_port=0`` picks a free port."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: int = Field(ge=1)
    masterqueue_url: str
    token: str = Field(min_length=1, repr=False)
    registry: str | None = Field(default=None, description="udp://… or http(s)://…; see module doc")
    registry_token: str | None = Field(default=None, repr=False)
    config_source: str | None = Field(default=None, description="LDIF path or ldap:// URL")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    state_dir: Path
    public_url: str | None = Field(default=None, description="the attach URL agents use")
    publish_interval_s: float | None = Field(
        default=None, gt=0, description="overrides the hierarchy"
    )
    attach_timeout_s: float | None = Field(
        default=None, gt=0, description="overrides the hierarchy"
    )
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    lifetime_margin_s: int = Field(default=LIFETIME_MARGIN_S, ge=0)
    min_lifetime_s: int = Field(default=MIN_LIFETIME_S, ge=1)
    token_cache_ttl_s: float = Field(default=TOKEN_CACHE_TTL_S, ge=0)
    shutdown_timeout_s: float = Field(default=SHUTDOWN_TIMEOUT_S, gt=0)

    @field_validator("registry")
    @classmethod
    def _valid_registry(cls, value: str | None) -> str | None:
        if value is not None:
            RegistryTarget.parse(value)
        return value

    def registry_target(self, configured_url: str) -> RegistryTarget:
        """Where to publish: ``registry`` if given, else ``configured_url`` (podRegistryURL).

        An HTTP URL without a ``registry_token`` means ApMon UDP to that host on
        :data:`DEFAULT_APMON_PORT` (publishing over HTTP needs the registry's token).
        """
        target = RegistryTarget.parse(self.registry or configured_url)
        if target.transport == "http" and not self.registry_token:
            url = f"udp://{target.host}:{DEFAULT_APMON_PORT}"
            return RegistryTarget(
                transport="udp", host=target.host, port=DEFAULT_APMON_PORT, url=url
            )
        return target

    @property
    def min_slot_ttl_s(self) -> int:
        """The least remaining TTL a slot must offer (published in ``Requirements``)."""
        return self.lifetime_margin_s + self.min_lifetime_s

    @property
    def tls_dir(self) -> Path:
        """The private directory of this cluster's TLS files."""
        return self.state_dir / "brokers" / str(self.request_id) / "tls"
