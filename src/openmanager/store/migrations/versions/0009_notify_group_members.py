"""Waiting group notifications as shared transitions and per-user members, instead of one row per
(user, transition).

Revision ID: 0009_notify_group_members
Revises: 0007_notify_groups

On the `notify` branch, after 0007_notify_groups. `notify_group_items` (one row per user and transition:
100,000 rows for a storm of 1,000 transitions and 100 users) becomes `notify_group_alerts` (one row per
transition, with the count of members listing it) and `notify_group_members` (one row per user, group and
channel set, listing its transitions). Waiting items are carried over (each one transition listed by one
member), so a group waiting across the upgrade is still sent, once; downgrading carries members back
into items.
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0009_notify_group_members"
down_revision = "0007_notify_groups"
branch_labels = None
depends_on = None

_ITEMS = sa.table("notify_group_items", sa.column("id", sa.Integer), sa.column("user", sa.String),
                  sa.column("group_key", sa.String), sa.column("alert_id", sa.String),
                  sa.column("transition", sa.String), sa.column("created_at", sa.BigInteger),
                  sa.column("channels", sa.Text), sa.column("alert", sa.Text))
_ALERTS = sa.table("notify_group_alerts", sa.column("ref", sa.String), sa.column("alert_id", sa.String),
                   sa.column("transition", sa.String), sa.column("created_at", sa.BigInteger),
                   sa.column("alert", sa.Text), sa.column("members", sa.Integer))
_MEMBERS = sa.table("notify_group_members", sa.column("id", sa.Integer), sa.column("user", sa.String),
                    sa.column("group_key", sa.String), sa.column("channels", sa.Text), sa.column("refs", sa.Text),
                    sa.column("size", sa.Integer))
_BATCH = 2000


def _create_items() -> None:
    op.create_table(
        "notify_group_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("group_key", sa.String(512), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("transition", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("channels", sa.Text, nullable=False),
        sa.Column("alert", sa.Text, nullable=False),
    )
    op.create_index("ix_notify_group_items_group", "notify_group_items", ["user", "group_key"])


def upgrade() -> None:
    op.create_table(
        "notify_group_alerts",
        sa.Column("ref", sa.String(32), primary_key=True),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("transition", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("alert", sa.Text, nullable=False),  # JSON text, written and read with orjson
        sa.Column("members", sa.Integer, nullable=False),
    )
    op.create_table(
        "notify_group_members",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("group_key", sa.String(512), nullable=False),
        sa.Column("channels", sa.Text, nullable=False),
        sa.Column("refs", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
    )
    op.create_index("ix_notify_group_members_group", "notify_group_members", ["user", "group_key"])
    conn = op.get_bind()
    last = 0
    while True:  # in id order, so the members keep the items' arrival order
        rows = conn.execute(sa.select(_ITEMS).where(_ITEMS.c.id > last).order_by(_ITEMS.c.id).limit(_BATCH)).all()
        if not rows:
            break
        last = rows[-1].id
        conn.execute(_ALERTS.insert(), [{"ref": f"item-{r.id}", "alert_id": r.alert_id, "transition": r.transition,
                                          "created_at": r.created_at, "alert": r.alert, "members": 1} for r in rows])
        conn.execute(_MEMBERS.insert(), [{"user": r.user, "group_key": r.group_key, "channels": r.channels,
                                          "refs": orjson.dumps([f"item-{r.id}"]).decode(), "size": 1} for r in rows])
    op.drop_index("ix_notify_group_items_group", table_name="notify_group_items")
    op.drop_table("notify_group_items")


def downgrade() -> None:
    _create_items()
    conn = op.get_bind()
    alerts = {r.ref: r for r in conn.execute(sa.select(_ALERTS)).all()}
    last = 0
    while True:
        rows = conn.execute(sa.select(_MEMBERS).where(_MEMBERS.c.id > last).order_by(_MEMBERS.c.id)
                            .limit(_BATCH)).all()
        if not rows:
            break
        last = rows[-1].id
        items = [{"user": r.user, "group_key": r.group_key, "alert_id": alerts[ref].alert_id,
                  "transition": alerts[ref].transition, "created_at": alerts[ref].created_at,
                  "channels": r.channels, "alert": alerts[ref].alert}
                 for r in rows for ref in orjson.loads(r.refs) if ref in alerts]
        if items:
            conn.execute(_ITEMS.insert(), items)
    op.drop_index("ix_notify_group_members_group", table_name="notify_group_members")
    op.drop_table("notify_group_members")
    op.drop_table("notify_group_alerts")
