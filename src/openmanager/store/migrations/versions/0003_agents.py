"""Agents: per-agent ingest tokens (stored hashed) and the last acknowledged batch (branch `agents`).

Revision ID: 0003_agents
Revises: 0001
Create Date: 2025-11-27

Its own branch off 0001, like `logs`: features that add tables at the same time need no linear order
(`Store.open` upgrades to "heads").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_agents"
down_revision = "0001"
branch_labels = ("agents",)
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("last_seen", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("buffer_id", sa.String(64), nullable=True),
        sa.UniqueConstraint("name", name="uq_agents_name"),
        sa.UniqueConstraint("token_hash", name="uq_agents_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("agents")
