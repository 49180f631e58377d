"""Ingest tokens for the OTLP/HTTP receiver, stored as SHA-256 only (branch `ingest_tokens`).

Revision ID: 0007_ingest_tokens
Revises: 0001

Its own branch off 0001, like the other features.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_ingest_tokens"
down_revision = "0001"
branch_labels = ("ingest_tokens",)
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ingest_tokens",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("name", name="uq_ingest_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_ingest_tokens_hash"),
    )


def downgrade() -> None:
    op.drop_table("ingest_tokens")
