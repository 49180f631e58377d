"""Persistence: servers and metric roll-ups in SQLite (default) or PostgreSQL, with Alembic migrations."""

from openmanager.store.db import MIGRATIONS_DIR, Store, StoreError, alembic_config, normalize_url
from openmanager.store.queries import history_points
from openmanager.store.rollups import RollupWriter

__all__ = [
    "MIGRATIONS_DIR",
    "RollupWriter",
    "Store",
    "StoreError",
    "alembic_config",
    "history_points",
    "normalize_url",
]
