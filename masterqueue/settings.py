"""Typed settings of the master-queue service (validated once, at the edge).

``db_url`` defaults to a SQLite file under ``state_dir``; ``config_source`` (an LDIF path or
``ldap://`` URL, default the packaged LDIF) supplies ``podRegistryURL`` and ``podMasterHosts``
from the ``ou=Config`` level unless ``registry_url`` is given here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from podgrid.config.request import DEFAULT_MAX_WORKERS_CAP
from podgrid.config.runtime import default_state_dir

DEFAULT_HTTP_PORT = 8886
DEFAULT_BROKER_HEARTBEAT_TIMEOUT_S = 30.0
DEFAULT_LEASE_S = 60.0
DEFAULT_SWEEP_INTERVAL_S = 2.0
DEFAULT_RETENTION_S = 7 * 86400.0  # finished records are kept a week
DEFAULT_LAUNCHER_INTERVAL_S = 0.5
DEFAULT_QUEUE_PUBLISH_INTERVAL_S = 5.0  # batch queue depth to the registry, for dashboards
DEFAULT_BROKER_STOP_GRACE_S = 10.0  # a cancelled broker gets this long to stop by itself
DEFAULT_TOKEN_CACHE_TTL_S = 10.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DB_FILE_NAME = "masterqueue.db"
SIGN_KEY_FILE_NAME = "sign.key"
DEFAULT_DB_POOL_SIZE = 10  # connections per process (MariaDB may overflow to twice this)

LauncherKind = Literal["local", "ssh", "slurm", "none"]


def default_broker_command() -> list[str]:
    """``python -m podgrid broker serve`` with this interpreter."""
    return [sys.executable, "-m", "podgrid", "broker", "serve"]


class MasterQueueSettings(BaseModel):
    """Everything the master queue needs to run; ``http_port=0`` picks a free port."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    http_host: str = "127.0.0.1"
    http_port: int = Field(DEFAULT_HTTP_PORT, ge=0, le=65535)
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) to serve HTTPS with")
    tls_key: Path | None = Field(None, description="its PEM private key")
    insecure_http: bool = Field(False, description="serve plain HTTP on a non-loopback address")
    state_dir: Path = Field(default_factory=default_state_dir)
    db_url: str = Field("", description="default: SQLite file <state_dir>/masterqueue.db")
    db_pool_size: int = Field(DEFAULT_DB_POOL_SIZE, ge=1, le=500)
    config_source: str | None = Field(None, description="LDIF path or ldap:// URL")
    registry_url: str | None = Field(None, description="overrides podRegistryURL")
    registry_publish: str | None = Field(
        None, description="udp://H:P or http(s)://; default: registry_url (publish_target rule)"
    )
    registry_token: str | None = Field(None, repr=False, description="for HTTP publish")
    apmon_password: str | None = Field(
        None, repr=False, description="in every ApMon datagram; handed to the brokers it starts"
    )
    queue_publish_interval_s: float | None = Field(
        DEFAULT_QUEUE_PUBLISH_INTERVAL_S, gt=0, description="None: do not publish the queue depth"
    )
    public_url: str | None = Field(None, description="URL brokers use; default: bound address")
    launcher: LauncherKind = "local"
    master_host: str | None = Field(None, description="local launcher: the host recorded")
    master_hosts: list[str] | None = Field(None, description="ssh: overrides podMasterHosts")
    ssh_port: int = Field(22, ge=1, le=65535)
    ssh_user: str | None = Field(None, description="default: the local user")
    ssh_client_keys: list[Path] = Field(default_factory=list, description="default: ~/.ssh keys")
    ssh_known_hosts: Path | None = Field(None, description="default: ~/.ssh/known_hosts")
    ssh_log_dir: str = Field(
        ".local/state/podgrid/brokers", description="on the master host, relative to home"
    )
    slurm_partition: str | None = Field(None, description="slurm launcher: the brokers' partition")
    slurm_account: str | None = Field(None, description="slurm launcher: the account charged")
    slurm_options: list[str] = Field(
        default_factory=list, description="slurm launcher: extra sbatch options (#SBATCH lines)"
    )
    max_workers_cap: int = Field(DEFAULT_MAX_WORKERS_CAP, ge=1)
    broker_heartbeat_timeout_s: float = Field(DEFAULT_BROKER_HEARTBEAT_TIMEOUT_S, gt=0)
    lease_s: float = Field(DEFAULT_LEASE_S, gt=0)
    sweep_interval_s: float = Field(DEFAULT_SWEEP_INTERVAL_S, gt=0)
    retention_s: float = Field(DEFAULT_RETENTION_S, gt=0)
    launcher_interval_s: float = Field(DEFAULT_LAUNCHER_INTERVAL_S, gt=0)
    broker_command: list[str] = Field(default_factory=default_broker_command, min_length=1)
    broker_stop_grace_s: float = Field(DEFAULT_BROKER_STOP_GRACE_S, ge=0)
    stop_brokers_on_exit: bool = Field(
        False, description="brokers are separate processes and normally outlive a restart"
    )
    token_cache_ttl_s: float = Field(DEFAULT_TOKEN_CACHE_TTL_S, ge=0)
    sign_key_file: Path | None = Field(
        None,
        description="the key brokers' sign secrets derive from (default <state_dir>/sign.key; "
        "master queues sharing a database must share it)",
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CAs the brokers it starts trust (PODGRID_CA_FILE): for this master "
        "queue's and the registry's HTTPS certificates when no system CA signed them",
    )
    broker_ca_file: Path | None = Field(
        None,
        description="the CA of brokers' HTTPS certificates, certificate and key "
        "(default <state_dir>/broker-ca.pem; master queues sharing a database must share it)",
    )
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    warm_brokers: int = Field(
        0, ge=0, le=64, description="local launcher: brokers kept started, Dask imported"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_db_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("db_url"):
            state_dir = Path(data.get("state_dir") or default_state_dir())
            return {**data, "db_url": f"sqlite+aiosqlite:///{state_dir / DB_FILE_NAME}"}
        return data

    @property
    def admin_token_path(self) -> Path:
        """Where the first ``serve`` writes the admin token (mode 0600)."""
        return self.state_dir / "admin.token"

    @property
    def sign_key_path(self) -> Path:
        """The sign key file (0600, made on first use); see :mod:`podgrid.masterqueue.signing`."""
        return self.sign_key_file or self.state_dir / SIGN_KEY_FILE_NAME

    @property
    def broker_ca_path(self) -> Path:
        """The broker CA file (0600, made on first use): :mod:`podgrid.masterqueue.broker_ca`."""
        return self.broker_ca_file or self.state_dir / "broker-ca.pem"

    @property
    def broker_log_dir(self) -> Path:
        """Where the local launcher writes each broker's output (``<id>.log``)."""
        return self.state_dir / "brokers"
