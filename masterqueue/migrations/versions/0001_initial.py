"""Initial master-queue schema: requests, jobs, their timelines, tokens, hosts, idempotency.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=f"pk_{table}")


def upgrade() -> None:
    """Create every table and index of revision 0001."""
    op.create_table(
        "requests",
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
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("broker_token_id", Id),
        sa.Column("master_host", sa.String(255)),
        sa.Column("address", sa.String(512)),
        sa.Column("workers", sa.JSON, nullable=False),
        sa.Column("worker_count", sa.Integer, nullable=False),
        sa.Column("connection", sa.JSON),
        sa.Column("heartbeat_ms", sa.BigInteger),
        _pk("requests"),
    )
    op.create_index("ix_requests_owner_id", "requests", ["owner", "id"])
    op.create_index("ix_requests_state_created_ms", "requests", ["state", "created_ms"])
    op.create_table(
        "request_events",
        _id(),
        sa.Column("request_id", Id, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1024)),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        _pk("request_events"),
    )
    op.create_index("ix_request_events_request_id_id", "request_events", ["request_id", "id"])
    _jobs()
    _tokens_hosts_keys()


def _jobs() -> None:
    op.create_table(
        "jobs",
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
        sa.Column("lease_expires_ms", sa.BigInteger),
        sa.Column("exit_code", sa.Integer),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        _pk("jobs"),
    )
    op.create_index(
        "ix_jobs_match", "jobs", ["state", sa.text("priority DESC"), "created_ms", "id"]
    )
    op.create_index("ix_jobs_state_lease_expires_ms", "jobs", ["state", "lease_expires_ms"])
    op.create_index("ix_jobs_state_updated_ms", "jobs", ["state", "updated_ms"])
    op.create_index("ix_jobs_owner_id", "jobs", ["owner", "id"])
    op.create_table(
        "job_events",
        _id(),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("reason", sa.String(1024)),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        _pk("job_events"),
    )
    op.create_index("ix_job_events_job_id_id", "job_events", ["job_id", "id"])


def _tokens_hosts_keys() -> None:
    op.create_table(
        "tokens",
        _id(),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("request_id", Id),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        _pk("tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_tokens_token_sha256"),
    )
    op.create_index("ix_tokens_request_id", "tokens", ["request_id"])
    op.create_table(
        "master_hosts",
        _id(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("launcher", sa.String(32), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("seen_ms", sa.BigInteger),
        _pk("master_hosts"),
        sa.UniqueConstraint("name", name="uq_master_hosts_name"),
    )
    op.create_table(
        "idempotency_keys",
        _id(),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("idem_key", sa.String(128), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("target_id", Id, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        _pk("idempotency_keys"),
        sa.UniqueConstraint(
            "owner", "kind", "idem_key", name="uq_idempotency_keys_owner_kind_idem_key"
        ),
    )


def downgrade() -> None:
    """Drop everything revision 0001 created."""
    for table in (
        "idempotency_keys",
        "master_hosts",
        "tokens",
        "job_events",
        "jobs",
        "request_events",
        "requests",
    ):
        op.drop_table(table)
