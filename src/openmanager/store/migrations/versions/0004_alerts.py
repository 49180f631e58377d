"""Alert rules (seeded with the default rule pack), alerts, alert history, silences, maintenance windows.

Revision ID: 0004_alerts
Revises: 0001
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB


def _rule(rid: str, name: str, condition: str, severity: str, for_: str, clear: str,
          description: str) -> dict[str, Any]:
    return {"id": rid, "name": name, "condition": condition, "severity": severity, "action": "immediate-alert",
            "for": for_, "cooldown": "5m", "fleet": False, "enabled": True, "clear": clear,
            "description": description}


# The default rule pack this migration stores in a fresh store, frozen: a migration must write the same rows
# whatever later versions make of the live pack (`core.alertrules.DEFAULT_RULES`, equal to this today). It
# includes the two forecast rules, in the pack's order; a store created before them gets them from
# `0008_forecast_rules`, which leaves a rule of the same id alone. The disk rules are per mount (`each`), as
# the live pack's 0004 stored them in a fresh store since labelled series; a store from before keeps its own.
DEFAULT_RULE_DEFINITIONS: tuple[dict[str, Any], ...] = (
    _rule("cpu-warning", "CPU high", "cpu > 70", "warning", "2m",
          "cpu < 65", "CPU above the warning threshold (70%) for 2 minutes; clears below 65%."),
    _rule("cpu-critical", "CPU critical", "cpu > 85", "critical", "1m",
          "cpu < 75", "CPU above the critical threshold (85%) for 1 minute; clears below 75%."),
    _rule("memory-warning", "Memory high", "memory > 75", "warning", "2m",
          "memory < 70", "Memory above 75% for 2 minutes; clears below 70%."),
    _rule("memory-critical", "Memory critical", "memory > 85", "critical", "1m",
          "memory < 80", "Memory above 85% for 1 minute; clears below 80%."),
    _rule("disk-warning", "Disk filling", "disk > 80", "warning", "5m",
          "disk < 78", "A filesystem above 80% for 5 minutes, one alert per mount; clears below 78%.")
    | {"each": "mount"},
    _rule("disk-critical", "Disk almost full", "disk > 90", "critical", "1m",
          "disk < 88", "A filesystem above 90% for 1 minute, one alert per mount; clears below 88%.")
    | {"each": "mount"},
    _rule("response-time-warning", "Slow responses", "response_time > 1000", "warning", "1m",
          "response_time < 800", "Response time above 1 s for 1 minute; clears below 800 ms."),
    _rule("response-time-critical", "Very slow responses", "response_time > 3000", "critical", "1m",
          "response_time < 2500", "Response time above 3 s for 1 minute; clears below 2.5 s."),
    _rule("server-offline", "Server offline", 'status == "offline"', "critical", "0s",
          'status != "offline"', "No sample for 3 ticks (or 10 s): the server or its source is down."),
    _rule("disk-full-forecast", "Disk full within 4 h", "time_to(disk, 100, 1h) < 4h AND disk > 75", "warning",
          "10s", "predict(disk, 1h, 6h) < 100 OR disk < 70",
          "The last hour's trend reaches 100% within 4 hours (disk above 75%); clears when it would not be "
          "full within 6 hours, or below 70%."),
    _rule("memory-exhaustion-forecast", "Memory will run out within 1 h",
          "time_to(memory, 100, 5m) < 1h AND memory > 75", "warning", "10s",
          "predict(memory, 5m, 2h) < 100 OR memory < 70",
          "The last 5 minutes' trend reaches 100% within an hour (memory above 75%); clears when it would not "
          "within 2 hours, or below 70%."),
)


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
        {"id": body["id"], "definition": dict(body), "created_at": now + i, "updated_at": now + i,
         "created_by": "default rule pack"}
        for i, body in enumerate(DEFAULT_RULE_DEFINITIONS)
    ])


def downgrade() -> None:
    op.drop_table("maintenance_windows")
    op.drop_table("silences")
    op.drop_table("alert_history")
    op.drop_table("alerts")
    op.drop_table("rules")
