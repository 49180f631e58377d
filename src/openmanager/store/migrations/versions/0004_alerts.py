"""Alert rules (seeded with the default rule pack), alerts, alert history, silences, maintenance windows.

Revision ID: 0004_alerts
Revises: 0001
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from openmanager.alerts.rules import DEFAULT_RULES, RuleSpec

revision = "0004_alerts"
down_revision = "0001"
branch_labels = ("alerts",)
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    rules = op.create_table(
        "rules",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("definition", _JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("server", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("data", _JSON, nullable=False),
    )
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_index("ix_alerts_server", "alerts", ["server"])
    op.create_index("ix_alerts_updated", "alerts", ["updated_at"])
    op.create_table(
        "alert_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("server", sa.String(255), nullable=True),
        sa.Column("transition", sa.String(16), nullable=False),
        sa.Column("notify", sa.Boolean, nullable=False),
        sa.Column("delivery", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("data", _JSON, nullable=False),
    )
    op.create_index("ix_alert_history_alert", "alert_history", ["alert_id", "ts"])
    op.create_index("ix_alert_history_ts", "alert_history", ["ts"])
    op.create_table(
        "silences",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("starts_at", sa.BigInteger, nullable=False),
        sa.Column("ends_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("matchers", _JSON, nullable=False),
    )
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("definition", _JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    now = int(time.time() * 1000)
    op.bulk_insert(rules, [
        # created_at spaced by 1 ms keeps the pack's order when listed by creation time
        {"id": body["id"], "definition": RuleSpec.from_api(body).to_api(), "created_at": now + i,
         "updated_at": now + i, "created_by": "default rule pack"}
        for i, body in enumerate(DEFAULT_RULES)
    ])


def downgrade() -> None:
    op.drop_table("maintenance_windows")
    op.drop_table("silences")
    op.drop_table("alert_history")
    op.drop_table("alerts")
    op.drop_table("rules")
