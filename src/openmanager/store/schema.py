"""The whole schema: every feature module's tables on one `MetaData` (for Alembic's autogenerate and
the schema test). Importing this module imports every table definition."""

from __future__ import annotations

from typing import Any

from openmanager.store import agents, alerts, ingest_tokens, logs, notifications, users  # noqa: F401  (their tables)
from openmanager.store.models import Base

metadata = Base.metadata
for _table in (*agents.metadata.tables.values(), *ingest_tokens.metadata.tables.values()):  # Core tables on
    if _table.name not in metadata.tables:  # MetaData of their own
        _table.to_metadata(metadata)

# Tables a migration creates that no model describes: SQLite's FTS5 index of the logs and its shadow tables.
UNMODELLED_PREFIXES = ("logs_fts",)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's filter: leave the unmodelled tables out of autogenerate and schema comparisons."""
    return not (type_ == "table" and name is not None and name.startswith(UNMODELLED_PREFIXES))
