"""Stored, searchable log records: the `logs` table and `LogStore`, its repository.

Records are stored as the `logs` topic carries them (`ts`, `server`, `level`, `service`, `message`,
any other keys in `fields`) and come back in the same shape. The schema is created by the
migrations of the `logs` branch (`0002_logs`, `0002_logs_fts`, `0007_log_dedupe`).

Records from an agent are stored at most once: each carries its origin (agent and buffer) and its item
seq (`core.logorigin`), stored in `origin` / `origin_seq` under a unique index, and a write skips any
record whose (origin, origin_seq) is stored already (`ON CONFLICT DO NOTHING`). Records of the hub's own
sources have no origin and are never skipped.

`contains` (what a user types into a search box) means:

- SQLite with FTS5 and its trigram tokenizer (SQLite >= 3.34, the normal case): a case-insensitive
  substring of the message — exactly what the `logs` topic's `contains` filter keeps. Terms of three
  characters or more are answered by the FTS index (after a bounded look at the newest rows, which
  answers common terms faster than the index can); shorter ones by a LIKE scan (ASCII-only case
  folding) bounded by the other filters.
- SQLite without the trigram tokenizer: the same LIKE scan for every term.
- PostgreSQL (stock, no extension): the message must contain the typed text as a case-insensitive
  substring (`ILIKE`), *and* every word of it must begin a word of the message as PostgreSQL's text
  parser splits it (`to_tsvector('simple', …)` with prefix matching, served by a GIN index). So
  `disk`, `Disk us` and `No space left` find "disk usage 97% … No space left on device", while a
  fragment from inside a word (`isk`) finds nothing on PostgreSQL but matches on SQLite. Paths,
  host names and e-mail addresses are single words to that parser: search them from their start.

Retention (`prune`) deletes by age, then the oldest records until the stored text fits a byte
budget. Every row carries its `size` (UTF-8 bytes of message + fields JSON); the total is kept as a
running figure in memory, computed with one `SUM` the first time and again every `RESYNC_S`, so a
prune reads only the rows it deletes (plus one page).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    Index,
    Integer,
    Select,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    column,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from openmanager.core.logorigin import OriginLogRecord, OriginRecord
from openmanager.core.model import LogLevel, LogRecord
from openmanager.store.db import Store, StoreError
from openmanager.store.models import Base

__all__ = ["MAX_SEARCH_LIMIT", "RESYNC_S", "LogStore", "glob_to_regex", "logs_table"]

MAX_SEARCH_LIMIT = 10_000
RESYNC_S = 6 * 3600.0  # recount the stored bytes with a full SUM this often
PRUNE_PAGE = 5_000  # rows examined (and at most deleted) per prune transaction
PROBE_ROWS = 5_000  # SQLite: newest rows scanned with LIKE before asking the FTS index (see LogStore._probe)
MIN_TRIGRAM_CHARS = 3

logs_table = Table(
    "logs",
    Base.metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", BigInteger(), nullable=False),
    Column("server", String(255), nullable=False),
    Column("level", SmallInteger(), nullable=False),
    Column("service", String(255), nullable=False),
    Column("message", Text(), nullable=False),
    Column("fields", JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"), nullable=True),
    Column("size", Integer(), nullable=False),
    Column("origin", BigInteger(), nullable=True),
    Column("origin_seq", BigInteger(), nullable=True),
    Index("ix_logs_ts", "ts"),
    Index("ix_logs_server_ts", "server", "ts"),
    Index("uq_logs_origin", "origin", "origin_seq", unique=True,
          sqlite_where=text("origin IS NOT NULL"), postgresql_where=text("origin IS NOT NULL")),
)
"""One log record per row. `level` is the `LogLevel` value; `size` is the bytes it counts for retention;
`origin` and `origin_seq` name an agent's buffer and its item (NULL for the hub's own sources)."""

_fts = table("logs_fts", column("rowid"), column("message"))
_SIMPLE: ColumnElement[str] = literal_column("'simple'")  # a literal, so the expression matches the GIN index's
_GLOB_CHARS = frozenset("*?[")
_BASE_KEYS = frozenset({"ts", "server", "level", "service", "message"})
_COLUMNS = (
    logs_table.c.id,
    logs_table.c.ts,
    logs_table.c.server,
    logs_table.c.level,
    logs_table.c.service,
    logs_table.c.message,
    logs_table.c.fields,
)


_LEVEL_BY_NAME = {lv.name: int(lv) for lv in LogLevel}
_LEVEL_VALUES = frozenset(int(lv) for lv in LogLevel)


def _level_value(value: object) -> int | None:
    if isinstance(value, str):
        known = _LEVEL_BY_NAME.get(value)
        if known is not None:
            return known
        try:
            return int(LogLevel.parse(value))
        except ValueError:
            return None
    if isinstance(value, int) and not isinstance(value, bool) and value in _LEVEL_VALUES:  # a LogLevel too
        return int(value)
    return None


def _row(record: LogRecord | Mapping[str, Any]) -> dict[str, Any] | None:
    """A record as a row to insert, or None when it lacks what a row needs. (On the ingest hot path.)"""
    ts: object
    server: object
    service: object
    message: object
    extra: Mapping[str, Any] | None
    origin: int | None = None
    origin_seq: int | None = None
    if isinstance(record, OriginRecord | OriginLogRecord) and record.origin > 0 and record.seq > 0:
        origin, origin_seq = record.origin, record.seq
    if isinstance(record, LogRecord):
        ts, server, service, message = record.ts, record.server, record.service, record.message
        level = _level_value(record.level)
        extra = record.fields
    else:
        get = record.get
        ts, server, service, message = get("ts"), get("server"), get("service"), get("message")
        level = _level_value(get("level"))
        extra = None
        if len(record) > 5 or not _BASE_KEYS.issuperset(record):
            extra = {k: v for k, v in record.items() if k not in _BASE_KEYS}
    if isinstance(ts, float) and ts == ts and abs(ts) < 2**62:
        ts = int(ts)
    if not isinstance(ts, int) or isinstance(ts, bool) or not isinstance(server, str) or not server or level is None:
        return None
    if not isinstance(message, str):
        message = str(message or "")
    if not isinstance(service, str):
        service = str(service or "")
    size = len(message) if message.isascii() else len(message.encode("utf-8", "replace"))
    fields: dict[str, Any] | None = None
    if extra:
        # whatever the topic could encode must be storable: round-trip through orjson (str() for the rest)
        encoded = orjson.dumps(extra, default=str, option=orjson.OPT_NON_STR_KEYS)
        fields = orjson.loads(encoded)
        size += len(encoded)
    return {
        "ts": ts,
        "server": server[:255],
        "level": level,
        "service": service[:255],
        "message": message,
        "fields": fields,
        "size": size,
        "origin": origin,
        "origin_seq": origin_seq,
    }


# `LogStore.write` on SQLite: the engine path's insert as one prepared statement (a record whose origin
# and seq are stored already is skipped by the unique index `uq_logs_origin`). `fields` is stored as the
# JSON text SQLAlchemy's JSON type stores and reads back (NULL for none).
_SQLITE_INSERT = (
    "INSERT INTO logs (ts, server, level, service, message, fields, size, origin, origin_seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def _sqlite_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    fields = row["fields"]
    return (row["ts"], row["server"], row["level"], row["service"], row["message"],
            None if fields is None else orjson.dumps(fields).decode(), row["size"], row["origin"], row["origin_seq"])


def _insert_sqlite(conn: sqlite3.Connection, values: list[tuple[Any, ...]]) -> tuple[int, int]:
    """Insert rows (on the store's writer thread, in its transaction); (rows stored, their bytes)."""
    stored = stored_bytes = 0
    cursor = conn.cursor()
    for v in values:
        cursor.execute(_SQLITE_INSERT, v)
        if cursor.rowcount > 0:  # 0: skipped, stored already (rowcount leaves out the FTS trigger's rows)
            stored += 1
            stored_bytes += v[6]
    return stored, stored_bytes


# `LogStore.write` on PostgreSQL through asyncpg: every row in one statement, as one array per column
# (one round trip, whatever the rows), skipping a record whose origin and seq are stored already
# (`uq_logs_origin`); returns the sizes of the rows stored.
_PG_INSERT = (
    "INSERT INTO logs (ts, server, level, service, message, fields, size, origin, origin_seq) "
    "SELECT ts, server, level, service, message, fields::jsonb, size, origin, origin_seq FROM unnest("
    "$1::bigint[], $2::text[], $3::smallint[], $4::text[], $5::text[], $6::text[], $7::integer[], $8::bigint[], "
    "$9::bigint[]) AS t(ts, server, level, service, message, fields, size, origin, origin_seq) "
    "ON CONFLICT DO NOTHING RETURNING size"
)
_PG_COLUMNS = ("ts", "server", "level", "service", "message", "fields", "size", "origin", "origin_seq")


def _pg_columns(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    out: list[list[Any]] = [[r[name] for r in rows] for name in _PG_COLUMNS]
    out[5] = [None if f is None else orjson.dumps(f).decode() for f in out[5]]
    return out


def _record(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(row.fields) if row.fields else {}
    try:
        level = LogLevel(row.level).name
    except ValueError:
        level = str(row.level)
    out.update(ts=int(row.ts), server=row.server, level=level, service=row.service, message=row.message)
    return out


def glob_to_regex(glob: str) -> str:
    """An `fnmatch` glob as an anchored POSIX (PostgreSQL ARE) regular expression."""
    out = ["^"]
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")
                continue
            body = glob[i:j].replace("\\", "\\\\")
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append(f"[{body}]")
        elif c.isalnum() or c == "_":
            out.append(c)
        else:
            out.append("\\" + c)
    out.append("$")
    return "".join(out)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fts5_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _tsquery_prefixes(lexemes: Iterable[str]) -> str:
    """`'a':* & 'b':*` — every lexeme as a quoted prefix term of a tsquery."""
    return " & ".join("'" + lx.replace("\\", "\\\\").replace("'", "''") + "':*" for lx in lexemes)


class LogStore:
    """Log records in the store: batched writes, filtered search, retention, forgetting a server.

    Shares the `Store`'s engine and its write serialisation (one asyncio lock per process and, on
    SQLite, `BEGIN IMMEDIATE`). Database errors come out as `StoreError`.
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._fts: bool | None = None  # SQLite: is there a logs_fts table? (checked once)
        self._total_bytes: int | None = None
        self._synced_at = 0.0

    @property
    def dialect(self) -> str:
        return self.store.dialect

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """The store's write transaction; if it fails, the running byte total is recounted next time."""
        try:
            async with self.store._write() as conn:
                yield conn
        except StoreError:
            self._total_bytes = None
            raise

    # -- writing ------------------------------------------------------------------------------

    async def write(self, records: Sequence[LogRecord | Mapping[str, Any]]) -> int:
        """Store records in one transaction (one executemany); returns how many were stored.

        Records may be `LogRecord`s or dicts shaped like the `logs` topic's records (extra keys go to
        `fields`). Records without an integer `ts`, a `server` or a known `level` are skipped, and so
        is a record whose origin and seq (`core.logorigin`) are stored already: writing the same agent
        records twice stores them once. When this returns, the transaction is committed.

        On a SQLite file the rows go in through `Store.run_write` (one prepared `INSERT` per row on the
        store's writer thread, one thread hop for the transaction): the log writer commits whenever an
        agent's batch waits for its records, many times a second, and through SQLAlchemy and aiosqlite each
        such commit cost about a millisecond of the hub's CPU (docs/benchmarks.md, "Mixed load"). On
        PostgreSQL through asyncpg they go in as one `INSERT ... SELECT FROM unnest(...)` in one
        `Store.run_pg_write` transaction.
        """
        rows = [r for r in map(_row, records) if r is not None]
        if not rows:
            return 0
        if self.store.raw_writes:
            values = [_sqlite_values(r) for r in rows]
            try:
                stored, stored_bytes = await self.store.run_write(lambda conn: _insert_sqlite(conn, values))
            except StoreError:
                self._total_bytes = None
                raise
        elif self.store.raw_pg_writes:
            columns = _pg_columns(rows)

            async def on_pg(conn: Any) -> tuple[int, int]:
                sizes = [int(r[0]) for r in await conn.fetch(_PG_INSERT, *columns)]
                return len(sizes), sum(sizes)

            try:
                stored, stored_bytes = await self.store.run_pg_write(on_pg)
            except StoreError:
                self._total_bytes = None
                raise
        else:
            async with self._write() as conn:
                if any(r["origin"] is not None for r in rows):
                    dialect = postgresql if self.dialect == "postgresql" else sqlite
                    statement = dialect.insert(logs_table).on_conflict_do_nothing().returning(logs_table.c.size)
                    sizes = (await conn.execute(statement, rows)).scalars().all()
                    stored, stored_bytes = len(sizes), sum(sizes)
                else:
                    await conn.execute(insert(logs_table), rows)
                    stored, stored_bytes = len(rows), sum(r["size"] for r in rows)
        if self._total_bytes is not None:
            self._total_bytes += stored_bytes
        return stored

    # -- searching ----------------------------------------------------------------------------

    async def search(
        self,
        server: str | Sequence[str] | None = None,
        min_level: LogLevel | str | None = None,
        contains: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The `limit` newest records that match every filter given, returned oldest → newest.

        `server`: ids or `fnmatch` globs (`web-*`), a list or one comma-separated string; a record
        matches any of them. `min_level`: the lowest level kept. `contains`: see the module doc.
        `since_ms <= ts < until_ms`. Ties in `ts` keep insertion order. Raises ValueError for an
        unknown level name.
        """
        limit = max(1, min(int(limit), MAX_SEARCH_LIMIT))
        query = select(*_COLUMNS)
        server_cond = self._server_condition(server)
        if server_cond is not None:
            query = query.where(server_cond)
        if min_level is not None:
            level = min_level if isinstance(min_level, LogLevel) else LogLevel.parse(min_level)
            if level > LogLevel.DEBUG:
                query = query.where(logs_table.c.level >= int(level))
        if since_ms is not None:
            query = query.where(logs_table.c.ts >= since_ms)
        if until_ms is not None:
            query = query.where(logs_table.c.ts < until_ms)
        async with self.store._read() as conn:
            if contains:
                rows = await self._probe(conn, query, contains, limit)
                if rows is not None:
                    return [_record(r) for r in reversed(rows)]
                query = await self._contains(conn, query, contains)
            query = query.order_by(logs_table.c.ts.desc(), logs_table.c.id.desc()).limit(limit)
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in reversed(rows)]

    async def _probe(self, conn: AsyncConnection, query: Select[Any], text: str, limit: int) -> Sequence[Any] | None:
        """SQLite: look for `text` among the newest `PROBE_ROWS` rows first, with a LIKE scan that stops at
        `limit` matches.

        The FTS index answers a rare term at once, but a common one by fetching and sorting every row that
        contains it. If the newest rows already hold `limit` matches (or they are all the rows there are),
        that is the answer: no newer match can lie outside them. Otherwise None, and the caller asks the
        index. ASCII terms only: LIKE folds only ASCII case, the trigram index folds all of Unicode.
        """
        if self.dialect != "sqlite" or len(text) < MIN_TRIGRAM_CHARS or not text.isascii():
            return None
        if not await self._has_fts(conn):
            return None
        ts_col = logs_table.c.ts
        boundary = (await conn.execute(select(ts_col).order_by(ts_col.desc()).offset(PROBE_ROWS - 1).limit(1))).scalar()
        probe = query.where(logs_table.c.message.like(_like_pattern(text), escape="\\"))
        if boundary is not None:
            probe = probe.where(ts_col >= boundary)
        probe = probe.order_by(ts_col.desc(), logs_table.c.id.desc()).limit(limit)
        rows = (await conn.execute(probe)).all()
        return rows if boundary is None or len(rows) >= limit else None

    def _server_condition(self, server: str | Sequence[str] | None) -> ColumnElement[bool] | None:
        if server is None:
            return None
        items = server.split(",") if isinstance(server, str) else list(server)
        names = sorted({s.strip() for s in items if s.strip()})
        if not names:
            return None
        exact = [s for s in names if not _GLOB_CHARS & set(s)]
        globs = [s for s in names if _GLOB_CHARS & set(s)]
        conds: list[ColumnElement[bool]] = []
        if exact:
            conds.append(logs_table.c.server.in_(exact))
        for g in globs:
            if self.dialect == "postgresql":
                conds.append(logs_table.c.server.regexp_match(glob_to_regex(g)))
            else:  # SQLite's GLOB is fnmatchcase, but negates a class with ^ rather than !
                conds.append(logs_table.c.server.op("GLOB")(g.replace("[!", "[^")))
        return or_(*conds)

    async def _has_fts(self, conn: AsyncConnection) -> bool:
        if self._fts is None:
            found = await conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'logs_fts'")
            self._fts = found.first() is not None
        return self._fts

    async def _contains(self, conn: AsyncConnection, query: Select[Any], text: str) -> Select[Any]:
        message = logs_table.c.message
        if self.dialect == "postgresql":
            query = query.where(message.ilike(_like_pattern(text), escape="\\"))
            lexemes = (
                await conn.execute(select(func.tsvector_to_array(func.to_tsvector(_SIMPLE, text))))
            ).scalar_one()
            if lexemes:
                tsquery = func.to_tsquery(_SIMPLE, _tsquery_prefixes(lexemes))
                query = query.where(func.to_tsvector(_SIMPLE, message).bool_op("@@")(tsquery))
            return query
        if len(text) >= MIN_TRIGRAM_CHARS and await self._has_fts(conn):
            matches = select(_fts.c.rowid).where(_fts.c.message.match(_fts5_phrase(text)))
            return query.where(logs_table.c.id.in_(matches))
        return query.where(message.like(_like_pattern(text), escape="\\"))

    # -- retention ----------------------------------------------------------------------------

    async def stored_bytes(self) -> int:
        """The retention size of everything stored (the running total; counted when unknown or stale)."""
        async with self.store._write() as conn:
            return await self._total(conn)

    async def _total(self, conn: AsyncConnection) -> int:
        now = self._clock()
        if self._total_bytes is None or now - self._synced_at >= RESYNC_S:
            total = (await conn.execute(select(func.coalesce(func.sum(logs_table.c.size), 0)))).scalar_one()
            self._total_bytes = int(total)
            self._synced_at = now
        return self._total_bytes

    async def prune(self, older_than_ms: int, max_bytes: int | None = None) -> tuple[int, int]:
        """Delete records older than `older_than_ms`, then the oldest records until the stored size is
        at most `max_bytes` (None: no size limit). Returns (deleted for age, deleted for size).

        Works oldest-first in transactions of at most `PRUNE_PAGE` rows, so writers wait for one page
        at a time, never for the whole prune; each page reads only the rows it deletes (plus one).
        """
        by_age = by_size = 0
        ts_col, id_col, size_col = logs_table.c.ts, logs_table.c.id, logs_table.c.size
        while True:
            async with self._write() as conn:
                total = await self._total(conn)
                if max_bytes is not None and total > max_bytes:
                    page_query = select(ts_col, id_col, size_col)
                else:  # only age can remove anything: look at old rows only
                    page_query = select(ts_col, id_col, size_col).where(ts_col < older_than_ms)
                page = (await conn.execute(page_query.order_by(ts_col, id_col).limit(PRUNE_PAGE))).all()
                aged = sized = freed = 0
                last: tuple[int, int] | None = None
                for ts, row_id, size in page:
                    if ts < older_than_ms:
                        aged += 1
                    elif max_bytes is not None and total - freed > max_bytes:
                        sized += 1
                    else:
                        break
                    freed += int(size)
                    last = (int(ts), int(row_id))
                if last is None:
                    return by_age, by_size
                cut_ts, cut_id = last
                await conn.execute(
                    delete(logs_table).where(or_(ts_col < cut_ts, and_(ts_col == cut_ts, id_col <= cut_id)))
                )
                self._total_bytes = max(0, total - freed)
            by_age += aged
            by_size += sized
            if aged + sized < len(page) or len(page) < PRUNE_PAGE:
                return by_age, by_size
            await asyncio.sleep(0)

    async def forget_server(self, server_id: str) -> int:
        """Delete every record of `server_id`; returns how many. Forgetting an unknown id does nothing."""
        async with self._write() as conn:
            total = await self._total(conn)
            where = logs_table.c.server == server_id
            count, freed = (
                await conn.execute(select(func.count(), func.coalesce(func.sum(logs_table.c.size), 0)).where(where))
            ).one()
            if count:
                await conn.execute(delete(logs_table).where(where))
                self._total_bytes = max(0, total - int(freed))
            return int(count)
