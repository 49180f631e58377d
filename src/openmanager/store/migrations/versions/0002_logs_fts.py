"""Full-text search over `logs.message`, one implementation per database (branch `logs`).

Revision ID: 0002_logs_fts
Revises: 0002_logs
Create Date: 2026-11-26

- SQLite: an FTS5 external-content table `logs_fts` over `logs.message` with the `trigram`
  tokenizer (SQLite >= 3.34), so a search is a case-insensitive *substring* match, the same
  meaning as the `logs` topic's `contains`. Triggers keep it in step with `logs` inside the
  writing statement's transaction: every writer (the batched writer, retention, forgetting a
  server, a manual DELETE) stays consistent without reading messages back, which FTS5 needs to
  remove a row from an external-content index. Without FTS5 or the trigram tokenizer nothing is
  created and searches fall back to a LIKE scan (see `store.logs`).
- PostgreSQL: a GIN expression index on `to_tsvector('simple', message)` (stock PostgreSQL, no
  extension). Searches use it to find word prefixes, then check the substring (see `store.logs`).

Each branch of `upgrade` does nothing on the other database.
"""

from __future__ import annotations

import sqlite3

from alembic import op

revision = "0002_logs_fts"
down_revision = "0002_logs"
branch_labels = None
depends_on = None

TRIGRAM_MIN_SQLITE = (3, 34, 0)

_SQLITE_UP = (
    "CREATE VIRTUAL TABLE logs_fts USING fts5(message, content='logs', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER logs_fts_ai AFTER INSERT ON logs BEGIN "
    "INSERT INTO logs_fts(rowid, message) VALUES (new.id, new.message); END",
    "CREATE TRIGGER logs_fts_ad AFTER DELETE ON logs BEGIN "
    "INSERT INTO logs_fts(logs_fts, rowid, message) VALUES ('delete', old.id, old.message); END",
    "CREATE TRIGGER logs_fts_au AFTER UPDATE OF message ON logs BEGIN "
    "INSERT INTO logs_fts(logs_fts, rowid, message) VALUES ('delete', old.id, old.message); "
    "INSERT INTO logs_fts(rowid, message) VALUES (new.id, new.message); END",
    # rows written before this revision (none when it runs right after 0002_logs)
    "INSERT INTO logs_fts(logs_fts) VALUES ('rebuild')",
)
_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS logs_fts_au",
    "DROP TRIGGER IF EXISTS logs_fts_ad",
    "DROP TRIGGER IF EXISTS logs_fts_ai",
    "DROP TABLE IF EXISTS logs_fts",
)


def _sqlite_has_trigram() -> bool:
    if sqlite3.sqlite_version_info < TRIGRAM_MIN_SQLITE:
        return False
    try:
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute("CREATE VIRTUAL TABLE probe USING fts5(x, tokenize='trigram')")
        finally:
            conn.close()
    except sqlite3.Error:  # FTS5 not compiled in
        return False
    return True


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        if _sqlite_has_trigram():
            for statement in _SQLITE_UP:
                op.execute(statement)
    elif dialect == "postgresql":
        op.execute("CREATE INDEX ix_logs_message_fts ON logs USING gin (to_tsvector('simple', message))")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE_DOWN:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_logs_message_fts")
