"""Agents in the store: who may push samples and logs through the ingest endpoint, and how far each got.

An agent has a unique `name` (its server id at the hub), a token that is shown once at creation and
stored only as its SHA-256 (tokens are 32 random bytes, so a plain hash is enough: nothing to
brute-force), `created_at`, `revoked_at`, `last_seen`, and `last_seq`: the sequence number of the last
batch the hub applied and acknowledged. `last_seq` is what makes ingest exactly-once across reconnects
and hub restarts: a batch whose seq is not above it is acknowledged again but not applied again.

`AckRecorder` writes those sequence numbers with group commit: every connection that needs a durable
ack waits for the next transaction, and one transaction carries the updates of every agent that asked
in the meantime, so a thousand agents do not need a thousand commits.

Times are epoch milliseconds. Database errors come out as `StoreError` (from `Store`).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, String, bindparam, select, update

from openmanager.core.errors import NotFoundError, OpenManagerError, ValidationError
from openmanager.store.db import Store
from openmanager.store.tokens import find_active, hash_token, issue, revoke, token_table

__all__ = [
    "TOKEN_PREFIX",
    "AckRecorder",
    "AgentExistsError",
    "AgentRecord",
    "AgentStore",
    "hash_token",
    "validate_agent_name",
]

TOKEN_PREFIX = "oma_"  # recognisable in a leaked-secrets scan; never part of the hash's secrecy
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

metadata = MetaData()

agents_table = token_table(
    "agents",
    metadata,
    Column("last_seen", BigInteger(), nullable=True),
    Column("last_seq", BigInteger(), nullable=False, server_default="0"),
    Column("buffer_id", String(64), nullable=True),
    name_unique="uq_agents_name",
    hash_unique="uq_agents_token_hash",
)


class AgentExistsError(OpenManagerError):
    """An active agent of that name exists already."""

    code = "conflict"


@dataclass(frozen=True, slots=True)
class AgentRecord:
    id: int
    name: str
    created_at: int
    revoked_at: int | None
    last_seen: int | None
    last_seq: int
    buffer_id: str | None = None  # the agent buffer whose numbering `last_seq` belongs to

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def validate_agent_name(name: str) -> str:
    """The name, or ValidationError: 1-128 characters of letters, digits, `.`, `_`, `-`, not starting with
    a punctuation mark (it becomes the server id, which appears in URLs and filters)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid agent name {name!r}: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            code="invalid_name",
        )
    return name


def _now_ms() -> int:
    return int(time.time() * 1000)


_COLUMNS = (
    agents_table.c.id,
    agents_table.c.name,
    agents_table.c.created_at,
    agents_table.c.revoked_at,
    agents_table.c.last_seen,
    agents_table.c.last_seq,
    agents_table.c.buffer_id,
)


def _record(row: Sequence[Any]) -> AgentRecord:
    return AgentRecord(
        id=int(row[0]),
        name=str(row[1]),
        created_at=int(row[2]),
        revoked_at=None if row[3] is None else int(row[3]),
        last_seen=None if row[4] is None else int(row[4]),
        last_seq=int(row[5]),
        buffer_id=None if row[6] is None else str(row[6]),
    )


class AgentStore:
    """Agents over a `Store` (its engine, its write serialisation)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, name: str, *, now_ms: int | None = None) -> str:
        """Create an agent and return its token, which is not stored anywhere: show it once.

        A revoked agent of the same name is re-activated with the new token (its `last_seq` is kept, so
        an agent that still holds unsent data carries on without duplicates). Raises ValidationError for
        a bad name, AgentExistsError when an active agent has that name."""
        validate_agent_name(name)
        now = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            return await issue(
                conn, agents_table, name, TOKEN_PREFIX, now, insert={"last_seq": 0}, reissue={},
                exists=lambda: AgentExistsError(
                    f"an agent named {name!r} exists; revoke it first to issue a new token"),
            )

    async def list(self) -> list[AgentRecord]:
        """Every agent, active and revoked, by name. Never includes tokens or their hashes."""
        async with self.store._read() as conn:
            rows = await conn.execute(select(*_COLUMNS).order_by(agents_table.c.name))
            return [_record(r) for r in rows]

    async def get(self, name: str) -> AgentRecord | None:
        async with self.store._read() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(agents_table.c.name == name))).first()
            return None if row is None else _record(row)

    async def revoke(self, name: str, *, now_ms: int | None = None) -> AgentRecord:
        """Revoke an agent's token (idempotent: an already revoked agent keeps its first `revoked_at`).
        The hub refuses the token from then on, also on a connection that is open (at its next batch).
        Raises NotFoundError for an unknown name."""
        now = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            row = await revoke(conn, agents_table, _COLUMNS, name, now)
        if row is None:
            raise NotFoundError(f"no agent {name!r}")
        return _record(row)

    async def authenticate(self, token: str | None) -> AgentRecord | None:
        """The active agent a token belongs to, or None (unknown, revoked, empty)."""
        if not token:
            return None
        async with self.store._read() as conn:
            row = await find_active(conn, agents_table, _COLUMNS, token)
        return None if row is None else _record(row)

    async def set_resume(self, agent_id: int, buffer_id: str, seq: int) -> None:
        """Start counting an agent's acknowledgements in another buffer's numbering (a new buffer file)."""
        async with self.store._write() as conn:
            await conn.execute(
                update(agents_table).where(agents_table.c.id == agent_id).values(buffer_id=buffer_id, last_seq=seq)
            )

    async def record_acks(self, acks: Mapping[int, tuple[int, int]]) -> set[int]:
        """Store `{agent id: (seq, seen_ms)}` in one transaction and return the ids whose agent is revoked
        or gone (their ack must not be sent). `last_seq` never moves backwards here. When this returns,
        the transaction is committed (see `Store.run_write` and `Store._write`).

        On a SQLite file this is two prepared statements (a `SELECT` of the live ids, one `executemany`
        `UPDATE`) in one `Store.run_write` transaction (on PostgreSQL through asyncpg, the same two in one
        `Store.run_pg_write` transaction): the ack recorder commits many times a second
        with a few agents each, and through SQLAlchemy and aiosqlite each commit cost ~1 ms of the hub's
        CPU in statement building and thread hops (docs/benchmarks.md, "Mixed load"). Elsewhere it goes
        through the engine."""
        if not acks:
            return set()
        ids = list(acks)
        rows = [(seq, seen, a, seq) for a, (seq, seen) in acks.items()]
        if self.store.raw_writes:
            live = await self.store.run_write(lambda conn: _record_acks_sqlite(conn, ids, rows))
            return set(ids) - live
        if self.store.raw_pg_writes:

            async def on_pg(conn: Any) -> set[int]:
                found = {int(r[0]) for r in await conn.fetch(_PG_LIVE, ids)}
                await conn.executemany(_PG_ACK, rows)
                return found

            return set(ids) - await self.store.run_pg_write(on_pg)
        live_q = select(agents_table.c.id).where(agents_table.c.id.in_(ids), agents_table.c.revoked_at.is_(None))
        stmt = (
            update(agents_table)
            .where(
                agents_table.c.id == bindparam("aid"),
                agents_table.c.revoked_at.is_(None),
                agents_table.c.last_seq <= bindparam("seq"),
            )
            .values(last_seq=bindparam("seq"), last_seen=bindparam("seen"))
        )
        async with self.store._write() as conn:
            refused = set(ids) - {int(i) for i in (await conn.execute(live_q)).scalars()}
            await conn.execute(stmt, [{"aid": a, "seq": seq, "seen": seen} for seq, seen, a, _ in rows])
        return refused


_ID_CHUNK = 500  # ids per `IN (...)`: under SQLite's old limit of 999 bind parameters
# The statements of `record_acks` on SQLite, the same as its engine path's: a revoked agent's ack is not
# recorded, and `last_seq` never moves backwards. Parameters: (seq, seen, id, seq).
_SQLITE_LIVE = "SELECT id FROM agents WHERE revoked_at IS NULL AND id IN ({})"
_SQLITE_ACK = "UPDATE agents SET last_seq = ?, last_seen = ? WHERE id = ? AND revoked_at IS NULL AND last_seq <= ?"


_PG_LIVE = "SELECT id FROM agents WHERE revoked_at IS NULL AND id = ANY($1::bigint[])"
_PG_ACK = "UPDATE agents SET last_seq = $1, last_seen = $2 WHERE id = $3 AND revoked_at IS NULL AND last_seq <= $4"


def _record_acks_sqlite(conn: sqlite3.Connection, ids: list[int], rows: list[tuple[int, int, int, int]]) -> set[int]:
    """The live ids among `ids`, and their acks written (on the store's writer thread, in its transaction)."""
    live: set[int] = set()
    for i in range(0, len(ids), _ID_CHUNK):
        chunk = ids[i : i + _ID_CHUNK]
        live.update(int(r[0]) for r in conn.execute(_SQLITE_LIVE.format(",".join("?" * len(chunk))), chunk))
    conn.executemany(_SQLITE_ACK, rows)
    return live


class AckRevoked(OpenManagerError):
    """The agent was revoked (or deleted) while connected."""

    code = "unauthorized"


class AckRecorder:
    """Group commit of acknowledged sequence numbers.

    `await record(agent_id, seq)` returns once a transaction holding that seq (or a later one of the same
    agent) has committed, and raises AckRevoked when the agent was revoked meanwhile. While a transaction
    runs, new requests gather for the next one; no background task outlives the pending requests. Raises
    StoreError when the write fails (for every waiter of that transaction)."""

    def __init__(self, agents: AgentStore) -> None:
        self.agents = agents
        self._pending: dict[int, tuple[int, int]] = {}
        self._waiters: asyncio.Future[set[int]] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0

    async def record(self, agent_id: int, seq: int) -> None:
        prev = self._pending.get(agent_id)
        self._pending[agent_id] = (max(seq, prev[0]) if prev else seq, _now_ms())
        loop = asyncio.get_running_loop()
        if self._waiters is None:
            self._waiters = loop.create_future()
            # Retrieve the outcome even if every waiter went away (no "exception never retrieved").
            self._waiters.add_done_callback(lambda f: f.cancelled() or f.exception())
        waiter = self._waiters
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop(), name="agent-acks")
        refused = await asyncio.shield(waiter)
        if agent_id in refused:
            raise AckRevoked("the agent's token was revoked")

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            waiter, self._waiters = self._waiters, None
            assert waiter is not None
            try:
                refused = await self.agents.record_acks(batch)
            except Exception as exc:
                waiter.set_exception(exc)
                continue
            except BaseException:
                waiter.cancel()
                raise
            self.commits += 1
            waiter.set_result(refused)
