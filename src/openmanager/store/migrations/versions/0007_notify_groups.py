"""Notification groups: the items waiting in a group, and when each (user, group) was last sent.

Revision ID: 0007_notify_groups
Revises: 0005_notify
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_notify_groups"
down_revision = "0005_notify"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.create_table(
        "notify_group_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("group_key", sa.String(512), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("transition", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("channels", sa.Text, nullable=False),  # JSON text, written and read with orjson
        sa.Column("alert", sa.Text, nullable=False),
    )
    op.create_index("ix_notify_group_items_group", "notify_group_items", ["user", "group_key"])
    op.create_table(
        "notify_groups",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("group_key", sa.String(512), primary_key=True),
        sa.Column("last_sent_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notify_groups")
    op.drop_index("ix_notify_group_items_group", table_name="notify_group_items")
    op.drop_table("notify_group_items")
