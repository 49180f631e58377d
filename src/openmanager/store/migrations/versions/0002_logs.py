"""Stored logs: the portable `logs` table (branch `logs`).

Revision ID: 0002_logs
Revises: 0001
Create Date: 2026-11-26

Its own branch off 0001, so features that add tables at the same time do not need a linear order
(`Store.open` upgrades to "heads"). The database-specific full-text index is the next revision on
this branch, `0002_logs_fts`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_logs"
down_revision = "0001"
branch_labels = ("logs",)
depends_on = None

# BIGINT ids on PostgreSQL (a busy fleet passes 2^31 lines in weeks); INTEGER on SQLite, where only
# `INTEGER PRIMARY KEY` is the 64-bit rowid alias.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "logs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("fields", _JSON, nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
    )
    op.create_index("ix_logs_ts", "logs", ["ts"])
    op.create_index("ix_logs_server_ts", "logs", ["server", "ts"])


def downgrade() -> None:
    op.drop_index("ix_logs_server_ts", table_name="logs")
    op.drop_index("ix_logs_ts", table_name="logs")
    op.drop_table("logs")
