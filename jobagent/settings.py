"""Typed settings of one job agent (validated once, at the edge: the command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GRACE_S: Final = 10.0  # seconds a batch job gets between SIGTERM and SIGKILL
DEFAULT_WORKER_STOP_S: Final = 10.0  # seconds a retiring worker gets to hand its data over
DEFAULT_EXIT_MARGIN_S: Final = 5.0  # seconds before the slot's end at which the agent leaves
DEFAULT_HEARTBEAT_S: Final = 2.0  # seconds between broker liveness probes while a worker runs
DEFAULT_REFUSED_S: Final = 10.0  # seconds a server that refused us is not tried again
DEFAULT_OUTPUT_CAP_BYTES: Final = 10 * 1024 * 1024
MAX_BACKOFF_S: Final = 30.0  # seconds, longest pause after repeated master-queue failures


class AgentSettings(BaseModel):
    """Everything one agent needs besides the configuration hierarchy and its slot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str = Field(min_length=1, max_length=128)
    site: str = Field(min_length=1, max_length=64)
    ce: str | None = None
    config_source: str
    token: str = Field(min_length=1, repr=False)
    state_dir: Path
    registry_url: str | None = Field(None, description="overrides podRegistryURL")
    masterqueue_url: str | None = Field(None, description="overrides podMasterQueueURL")
    registry_publish: str | None = Field(None, description="udp://h:p or http(s)://h:p")
    registry_token: str | None = Field(None, repr=False)
    apmon_password: str | None = Field(None, repr=False)
    config_refresh_s: float | None = Field(None, gt=0, description="overrides podConfigRefresh")
    http_host: str | None = None
    tls_cert: Path | None = Field(None, description="serve --http as HTTPS with this certificate")
    tls_key: Path | None = Field(None, description="its PEM private key")
    insecure_http: bool = Field(False, description="plain HTTP on a non-loopback --http")
    http_port: int = Field(0, ge=0, le=65535)
    grace_s: float = Field(DEFAULT_GRACE_S, ge=0)
    worker_stop_s: float = Field(DEFAULT_WORKER_STOP_S, ge=0)
    exit_margin_s: float = Field(DEFAULT_EXIT_MARGIN_S, ge=0)
    heartbeat_s: float = Field(DEFAULT_HEARTBEAT_S, gt=0)
    refused_s: float = Field(DEFAULT_REFUSED_S, ge=0)
    output_cap_bytes: int = Field(DEFAULT_OUTPUT_CAP_BYTES, ge=0)
    longpoll: bool | None = Field(None, description="None: ask the registry's /healthz")
    fork_workers: bool = Field(True, description="fork workers from a zygote with Dask imported")
    payload_user: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="user name or uid that workers and batch jobs run as (needs root)",
    )
    seed: int | None = None
