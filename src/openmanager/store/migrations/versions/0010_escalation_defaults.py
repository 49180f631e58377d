"""The per-severity escalation defaults set over the API (`PUT /api/v1/escalation/defaults`).

Revision ID: 0010_escalation_defaults
Revises: 0004_alerts

Its own branch off 0004_alerts (label `escalation_defaults`). A row per severity set over the API; its
`policy` (the wire form of a rule's `escalation`, or null for none) wins over the `escalation_<severity>`
setting. Downgrading drops the table: the settings apply again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010_escalation_defaults"
down_revision = "0004_alerts"
branch_labels = ("escalation_defaults",)
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "escalation_defaults",
        sa.Column("severity", sa.String(16), primary_key=True),
        sa.Column("policy", _JSON, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("escalation_defaults")
