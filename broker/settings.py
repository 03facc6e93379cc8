"""Typed settings of one broker (validated once, at the edge) and the broker's constants.

Registry (``registry``, else ``podRegistryURL``): published to by the rule of
:func:`podgrid.monitoring.publish_target.publish_target` — ``udp://host:port`` sends ApMon datagrams
(fire and forget, like PoD's own ApMon); an ``http(s)://`` URL is published to with
``POST /publish`` when ``registry_token`` is set, and with ApMon datagrams to that host on
the ApMon port otherwise.

``sign_secret`` comes from ``PODGRID_SIGN_SECRET`` (set by the launcher like the broker token,
see :mod:`podgrid.masterqueue.signing`); without it ``POST /v1/sign`` is off and the owner
cannot get a client certificate from this broker.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from podgrid.monitoring.publish_target import publish_target

LIFETIME_MARGIN_S = 30  # seconds a worker retires before its batch slot ends
MIN_LIFETIME_S = 60  # seconds of useful work a slot must still offer
SHUTDOWN_TIMEOUT_S = 10.0  # seconds for retiring workers and closing the scheduler


class BrokerSettings(BaseModel):
    """Everything one broker needs; ``http_port=0`` picks a free port."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: int = Field(ge=1)
    masterqueue_url: str
    token: str = Field(min_length=1, repr=False)
    registry: str | None = Field(default=None, description="udp://… or http(s)://…; see module doc")
    registry_token: str | None = Field(default=None, repr=False)
    apmon_password: str | None = Field(default=None, repr=False)
    config_source: str | None = Field(default=None, description="LDIF path or ldap:// URL")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    state_dir: Path
    public_url: str | None = Field(default=None, description="the attach URL agents use")
    sign_secret: str | None = Field(
        default=None,
        min_length=32,
        repr=False,
        description="the per-request secret the master queue signs owner CSRs with (/v1/sign)",
    )
    publish_interval_s: float | None = Field(
        default=None, gt=0, description="overrides the hierarchy"
    )
    attach_timeout_s: float | None = Field(
        default=None, gt=0, description="overrides the hierarchy"
    )
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    lifetime_margin_s: int = Field(default=LIFETIME_MARGIN_S, ge=0)
    min_lifetime_s: int = Field(default=MIN_LIFETIME_S, ge=1)
    shutdown_timeout_s: float = Field(default=SHUTDOWN_TIMEOUT_S, gt=0)

    @field_validator("registry")
    @classmethod
    def _valid_registry(cls, value: str | None) -> str | None:
        if value is not None:
            publish_target(value, None)
        return value

    @property
    def min_slot_ttl_s(self) -> int:
        """The least remaining TTL a slot must offer (published in ``Requirements``)."""
        return self.lifetime_margin_s + self.min_lifetime_s

    @property
    def tls_dir(self) -> Path:
        """The private directory of this cluster's TLS files."""
        return self.state_dir / "brokers" / str(self.request_id) / "tls"

    @property
    def https_dir(self) -> Path:
        """The private directory of the attach API's HTTPS key and certificate."""
        return self.state_dir / "brokers" / str(self.request_id) / "https"
