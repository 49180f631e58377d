"""Roll-up buckets keep each metric's sum of squares: `stats` lists may carry a fifth element.

Revision ID: 0007_rollup_moments
Revises: 0001

Its own branch off 0001 (label `rollup_moments`), like the other features. A bucket's statistics were
`[min, max, sum, n]`; from this revision the hub writes `[min, max, sum, n, sumsq]` (`core.rollup`), which
the seasonal baselines of `anomaly()` need. Upgrading changes no row: a four-element list stays valid and
reads as a bucket without a sum of squares (merging it with a newer bucket gives none either, never a
partial one). Downgrading drops the fifth element from every row, so that a hub older than this revision,
which refuses any other length, reads them all again.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007_rollup_moments"
down_revision = "0001"
branch_labels = ("rollup_moments",)
depends_on = None

_BATCH = 2000


def upgrade() -> None:
    """Nothing to rewrite: old rows are valid as they are."""


def _four(stats: Any) -> tuple[bool, Any]:
    if isinstance(stats, str):
        stats = json.loads(stats)
    changed = False
    out = {}
    for name, raw in (stats or {}).items():
        if isinstance(raw, list) and len(raw) > 4:
            raw = raw[:4]
            changed = True
        out[name] = raw
    return changed, out


def downgrade() -> None:
    conn = op.get_bind()
    rollups = sa.table(
        "rollups",
        sa.column("server_id", sa.String),
        sa.column("resolution_s", sa.Integer),
        sa.column("start_ms", sa.BigInteger),
        sa.column("stats", sa.JSON),
    )
    key = (rollups.c.server_id, rollups.c.resolution_s, rollups.c.start_ms)
    after: tuple[str, int, int] | None = None
    while True:
        query = sa.select(*key, rollups.c.stats).order_by(*key).limit(_BATCH)
        if after is not None:
            query = query.where(sa.tuple_(*key) > sa.tuple_(*(sa.literal(v) for v in after)))
        rows = conn.execute(query).all()
        if not rows:
            return
        for server_id, resolution_s, start_ms, stats in rows:
            changed, four = _four(stats)
            if changed:
                conn.execute(
                    rollups.update()
                    .where(rollups.c.server_id == server_id, rollups.c.resolution_s == resolution_s,
                           rollups.c.start_ms == start_ms)
                    .values(stats=four)
                )
        after = (rows[-1][0], rows[-1][1], rows[-1][2])
