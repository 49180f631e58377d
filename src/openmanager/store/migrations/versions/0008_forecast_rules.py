"""The default pack's two forecast rules, for stores created before them.

Revision ID: 0008_forecast_rules
Revises: 0004_alerts

Its own branch off 0004_alerts (label `forecast_rules`). A store created after the pack gained "Disk full
within 4 h" and "Memory will run out within 1 h" got them from 0004 (which seeds the live pack); one created
before gets them here, once: a rule of the same id already there is left as it is, and deleting one later
sticks, as for every default rule. The definitions are written out (frozen, as a migration's data should
be); `tests/store/test_alerts_store.py` checks they are the pack's. Downgrading deletes them unless they
were edited since.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008_forecast_rules"
down_revision = "0004_alerts"
branch_labels = ("forecast_rules",)
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
CREATED_BY = "default rule pack"

RULES: tuple[dict[str, Any], ...] = (
    {
        "id": "disk-full-forecast",
        "name": "Disk full within 4 h",
        "condition": "time_to(disk, 100, 1h) < 4h AND disk > 75",
        "severity": "warning",
        "action": "immediate-alert",
        "for": "10s",
        "cooldown": "5m",
        "fleet": False,
        "enabled": True,
        "clear": "predict(disk, 1h, 6h) < 100 OR disk < 70",
        "description": "The last hour's trend reaches 100% within 4 hours (disk above 75%); clears when it would "
                       "not be full within 6 hours, or below 70%.",
    },
    {
        "id": "memory-exhaustion-forecast",
        "name": "Memory will run out within 1 h",
        "condition": "time_to(memory, 100, 5m) < 1h AND memory > 75",
        "severity": "warning",
        "action": "immediate-alert",
        "for": "10s",
        "cooldown": "5m",
        "fleet": False,
        "enabled": True,
        "clear": "predict(memory, 5m, 2h) < 100 OR memory < 70",
        "description": "The last 5 minutes' trend reaches 100% within an hour (memory above 75%); clears when it "
                       "would not within 2 hours, or below 70%.",
    },
)


def _rules() -> sa.TableClause:
    return sa.table(
        "rules",
        sa.column("id", sa.String),
        sa.column("definition", _JSON),
        sa.column("created_at", sa.BigInteger),
        sa.column("updated_at", sa.BigInteger),
        sa.column("created_by", sa.String),
    )


def upgrade() -> None:
    conn = op.get_bind()
    rules = _rules()
    have = {row[0] for row in conn.execute(sa.select(rules.c.id).where(rules.c.id.in_([r["id"] for r in RULES])))}
    now = int(time.time() * 1000)
    rows = [{"id": r["id"], "definition": r, "created_at": now + i, "updated_at": now + i, "created_by": CREATED_BY}
            for i, r in enumerate(RULES) if r["id"] not in have]
    if rows:
        op.bulk_insert(rules, rows)


def downgrade() -> None:
    rules = _rules()
    op.execute(rules.delete().where(rules.c.id.in_([r["id"] for r in RULES]), rules.c.created_by == CREATED_BY,
                                    rules.c.created_at == rules.c.updated_at))
