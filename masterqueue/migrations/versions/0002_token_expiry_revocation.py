"""Tokens can expire and be revoked: ``tokens.expires_ms`` and ``tokens.revoked_ms``.

Both are nullable epoch milliseconds (NULL: never expires / not revoked), so every token
issued before this revision keeps working unchanged.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the expiry and revocation times to ``tokens``."""
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_ms", sa.BigInteger))
        batch.add_column(sa.Column("revoked_ms", sa.BigInteger))


def downgrade() -> None:
    """Drop them again (every token becomes permanent and unrevoked)."""
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("revoked_ms")
        batch.drop_column("expires_ms")
