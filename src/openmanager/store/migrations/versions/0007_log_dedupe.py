"""Agent log records stored once: `logs.origin` and `logs.origin_seq` under a unique index (branch `logs`).

Revision ID: 0007_log_dedupe
Revises: 0002_logs_fts
Create Date: 2026-12-07

`origin` names an agent's buffer (`core.logorigin.log_origin`), `origin_seq` the record's item number in
it; both are NULL for records of the hub's own sources. The index is partial (`WHERE origin IS NOT
NULL`), so those rows cost it nothing, and a write of agent records uses `ON CONFLICT DO NOTHING` on it
(`store.logs.LogStore.write`). Rows stored before this revision have no origin: a batch an agent re-sends
across this upgrade can still be stored twice, once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_log_dedupe"
down_revision = "0002_logs_fts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("logs", sa.Column("origin", sa.BigInteger(), nullable=True))
    op.add_column("logs", sa.Column("origin_seq", sa.BigInteger(), nullable=True))
    op.create_index("uq_logs_origin", "logs", ["origin", "origin_seq"], unique=True,
                    sqlite_where=sa.text("origin IS NOT NULL"), postgresql_where=sa.text("origin IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("uq_logs_origin", table_name="logs")
    op.drop_column("logs", "origin_seq")  # SQLite >= 3.35 drops a column in place (the FTS triggers stay)
    op.drop_column("logs", "origin")
