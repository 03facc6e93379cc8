"""The master queue's tables (SQLAlchemy Core), portable across MariaDB and SQLite.

Times are integer epoch milliseconds (``*_ms`` columns). List-valued requirements of a job are
also kept as comma-delimited keys (``packages_key`` = ``",a,b,"``, ``sites_key``; ``","`` when
empty) so the matcher can test them in one SQL statement with plain ``REPLACE``/``LENGTH``,
without sub-queries that a ``FOR UPDATE SKIP LOCKED`` claim would also lock.
The Alembic migrations under ``masterqueue/migrations`` create exactly these tables; a test
compares the two.
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)

# BIGINT ids, but INTEGER on SQLite: only "INTEGER PRIMARY KEY" auto-increments there.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ms = sa.BigInteger  # epoch milliseconds


def _id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


requests = sa.Table(
    "requests",
    metadata,
    _id(),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(1024)),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("source_text", sa.Text, nullable=False),
    sa.Column("min_workers", sa.Integer, nullable=False),
    sa.Column("max_wait_s", sa.Integer, nullable=False),
    sa.Column("ttl_s", sa.Integer, nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("updated_ms", Ms, nullable=False),
    sa.Column("broker_token_id", Id),
    sa.Column("master_host", sa.String(255)),
    sa.Column("address", sa.String(512)),
    sa.Column("workers", sa.JSON, nullable=False),
    sa.Column("worker_count", sa.Integer, nullable=False, default=0),
    sa.Column("connection", sa.JSON),
    sa.Column("heartbeat_ms", Ms),
    sa.Index(None, "owner", "id"),
    sa.Index(None, "state", "created_ms"),
)

request_events = sa.Table(
    "request_events",
    metadata,
    _id(),
    sa.Column("request_id", Id, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(1024)),
    sa.Column("at_ms", Ms, nullable=False),
    sa.Index(None, "request_id", "id"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    _id(),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("cores", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("ttl_s", sa.Integer, nullable=False),
    sa.Column("packages_key", sa.String(4096), nullable=False),
    sa.Column("sites_key", sa.String(2048), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("agent_id", sa.String(128)),
    sa.Column("lease_token", sa.String(64)),
    sa.Column("lease_ms", sa.Integer),
    sa.Column("lease_expires_ms", Ms),
    sa.Column("exit_code", sa.Integer),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("updated_ms", Ms, nullable=False),
    # The matcher walks this index in order and stops at the first fitting, unlocked row.
    sa.Index("ix_jobs_match", "state", sa.text("priority DESC"), "created_ms", "id"),
    sa.Index(None, "state", "lease_expires_ms"),
    sa.Index(None, "state", "updated_ms"),
    sa.Index(None, "owner", "id"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    _id(),
    sa.Column("job_id", Id, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("agent_id", sa.String(128)),
    sa.Column("reason", sa.String(1024)),
    sa.Column("at_ms", Ms, nullable=False),
    sa.Index(None, "job_id", "id"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    _id(),
    sa.Column("token_sha256", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("request_id", Id),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("expires_ms", Ms),  # NULL: never expires
    sa.Column("revoked_ms", Ms),  # NULL: not revoked
    sa.UniqueConstraint("token_sha256"),
    sa.Index(None, "request_id"),
)

master_hosts = sa.Table(
    "master_hosts",
    metadata,
    _id(),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("launcher", sa.String(32), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.Column("seen_ms", Ms),
    sa.UniqueConstraint("name"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    _id(),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("idem_key", sa.String(128), nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("target_id", Id, nullable=False),
    sa.Column("created_ms", Ms, nullable=False),
    sa.UniqueConstraint("owner", "kind", "idem_key"),
)
