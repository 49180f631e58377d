"""Initial schema: servers and rollups.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("location", sa.String(255), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "rollups",
        sa.Column("server_id", sa.String(255), nullable=False),
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("stats", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("server_id", "resolution_s", "start_ms"),
    )
    op.create_index("ix_rollups_resolution_start", "rollups", ["resolution_s", "start_ms"])


def downgrade() -> None:
    op.drop_index("ix_rollups_resolution_start", table_name="rollups")
    op.drop_table("rollups")
    op.drop_table("servers")
