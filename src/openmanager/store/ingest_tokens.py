"""Ingest tokens: bearer tokens for the OTLP/HTTP receiver (`/v1/metrics`, `/v1/logs`), scoped to ingest only.

An ingest token has a unique `name` (who sends with it: a collector, a fleet), is shown once at creation
and stored only as its SHA-256 (32 random bytes: nothing to brute-force), and can be revoked; a revoked
name may be issued a new token. It is no user credential: the HTTP gate and `/ws` do not know it, and the
OTLP routes accept nothing else. `last_used_at` is written at most once a minute per token.

Times are epoch milliseconds. Database errors come out as `StoreError` (from `Store`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, select, update

from openmanager.core.errors import ConflictError, NotFoundError
from openmanager.store.agents import validate_agent_name
from openmanager.store.db import Store
from openmanager.store.tokens import find_active, issue, revoke, token_table

__all__ = ["INGEST_TOKEN_PREFIX", "IngestToken", "IngestTokenStore"]

INGEST_TOKEN_PREFIX = "omi_"  # recognisable in a leaked-secrets scan
LAST_USED_EVERY_MS = 60_000

metadata = MetaData()

ingest_tokens_table = token_table(
    "ingest_tokens",
    metadata,
    Column("last_used_at", BigInteger(), nullable=True),
    name_unique="uq_ingest_tokens_name",
    hash_unique="uq_ingest_tokens_hash",
)
_COLUMNS = (
    ingest_tokens_table.c.id,
    ingest_tokens_table.c.name,
    ingest_tokens_table.c.created_at,
    ingest_tokens_table.c.revoked_at,
    ingest_tokens_table.c.last_used_at,
)


@dataclass(frozen=True, slots=True)
class IngestToken:
    id: int
    name: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_api(self) -> dict[str, Any]:
        return {"name": self.name, "status": "active" if self.active else "revoked", "created_at": self.created_at,
                "revoked_at": self.revoked_at, "last_used_at": self.last_used_at}


def _record(row: Sequence[Any]) -> IngestToken:
    return IngestToken(int(row[0]), str(row[1]), int(row[2]), None if row[3] is None else int(row[3]),
                       None if row[4] is None else int(row[4]))


def _now_ms() -> int:
    return int(time.time() * 1000)


class IngestTokenStore:
    """Ingest tokens over a `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._used: dict[int, int] = {}  # token id -> last_used_at written, ms

    async def create(self, name: str, *, now_ms: int | None = None) -> str:
        """Issue a token for `name` and return it (not stored anywhere: show it once). A revoked name is
        issued a new token. Raises ValidationError for a bad name (the rules of agent names), ConflictError
        when an active token has that name."""
        validate_agent_name(name)
        now = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            return await issue(
                conn, ingest_tokens_table, name, INGEST_TOKEN_PREFIX, now, insert={},
                reissue={"last_used_at": None},
                exists=lambda: ConflictError(
                    f"an ingest token named {name!r} exists; revoke it first to issue a new one"),
            )

    async def list(self) -> list[IngestToken]:
        """Every ingest token, active and revoked, by name. Never includes tokens or their hashes."""
        async with self.store._read() as conn:
            rows = await conn.execute(select(*_COLUMNS).order_by(ingest_tokens_table.c.name))
            return [_record(r) for r in rows]

    async def revoke(self, name: str, *, now_ms: int | None = None) -> IngestToken:
        """Revoke a token (idempotent: the first `revoked_at` stays); refused from the next request on.
        Raises NotFoundError for an unknown name."""
        now = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            row = await revoke(conn, ingest_tokens_table, _COLUMNS, name, now)
        if row is None:
            raise NotFoundError(f"no ingest token {name!r}")
        return _record(row)

    async def authenticate(self, token: str | None) -> IngestToken | None:
        """The active ingest token `token` is, or None (missing, unknown, revoked). Notes its use (written at
        most every LAST_USED_EVERY_MS)."""
        if not token or not token.startswith(INGEST_TOKEN_PREFIX) or len(token) > 128:
            return None
        async with self.store._read() as conn:
            row = await find_active(conn, ingest_tokens_table, _COLUMNS, token)
        if row is None:
            return None
        record = _record(row)
        now = _now_ms()
        t = ingest_tokens_table
        if now - self._used.get(record.id, record.last_used_at or 0) >= LAST_USED_EVERY_MS:
            self._used[record.id] = now
            async with self.store._write() as conn:
                await conn.execute(update(t).where(t.c.id == record.id).values(last_used_at=now))
        return record
