"""The store: servers and metric roll-ups in SQLite (default) or PostgreSQL, through async SQLAlchemy.

`Store.open(url)` creates the engine, applies the SQLite pragmas, and upgrades the schema to the
newest Alembic revision before returning. Every method runs in its own transaction; database
errors come out as `StoreError` (bad URLs as `ConfigError`).

Writes are serialized inside one process (an asyncio lock), and on SQLite every write transaction
starts with `BEGIN IMMEDIATE`, so the read-merge-write of `write_buckets` cannot interleave with
another writer on the same file. Hot, small, frequent writes (the agents' acknowledged seqs, the log
writer's batches) can skip SQLAlchemy on a SQLite file: `Store.run_write` runs a plain function over a
`sqlite3` connection of the store's own, on a writer thread of its own, as one transaction in one thread
hop (through SQLAlchemy and aiosqlite every statement, cursor, BEGIN and COMMIT is a hop of its own).
On PostgreSQL, `write_buckets` takes a transaction-level advisory lock first, so two hub processes
merging into the same new bucket (a leader handing over) cannot lose a write; migrations run under
another, so processes starting together migrate once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Row, delete, event, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from openmanager.core.errors import ConfigError, OpenManagerError
from openmanager.core.model import ServerInfo
from openmanager.core.rollup import Bucket, MetricStats, merge
from openmanager.store.files import create_private_file, make_private_dir
from openmanager.store.models import RollupRow, ServerRow

__all__ = ["MIGRATIONS_DIR", "Store", "StoreError", "alembic_config", "normalize_url", "sqlite_file"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 10_000
_KEY_CHUNK = 300  # keys per `(a, b, c) IN (...)` query: 900 bind parameters, under SQLite's old 999 limit
_ID_CHUNK = 500
_WRITE_OPTION = "openmanager_write"

_T = TypeVar("_T")


def json_dumps(value: Any) -> str:
    """JSON columns are written by orjson (several times faster than `json`: a grouped notification
    lists a thousand alerts); what orjson refuses (a type it does not know) by `json`, as before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """JSON columns are read by orjson; text it refuses (`NaN`, which `json` wrote in earlier versions)
    by `json`."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class StoreError(OpenManagerError):
    """The database failed (unreachable, locked, corrupt, migration failed)."""

    code = "store_error"


def normalize_url(url: str) -> str:
    """Map a database URL onto its async driver.

    `sqlite:///./data/x.db` (any SQLite driver) becomes `sqlite+aiosqlite:///./data/x.db`;
    `postgresql://`, `postgres://` and `postgresql+psycopg2://` become `postgresql+asyncpg://`
    (`postgresql+asyncpg://` and `postgresql+psycopg://` are kept). Raises ConfigError for
    anything else.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL {url!r}") from exc
    backend = parsed.get_backend_name()
    driver = parsed.drivername.partition("+")[2]  # explicit driver only, not the dialect's default
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        if driver not in ("asyncpg", "psycopg"):
            parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations (no alembic.ini needed).

    With `url`, the `alembic` commands (`upgrade`, `revision --autogenerate`) can be driven from
    Python against that database.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def _sqlite_file(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite://` URL (None for in-memory databases and other backends)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    return _sqlite_file(url) if parsed.get_backend_name() == "sqlite" else None


def _prepare_sqlite_file(path: Path) -> None:
    """Create the parent directory (0700) and the file (0600) when missing, and check the file can be
    opened. SQLite gives its `-wal` and `-shm` files the database file's mode, so they are 0600 too.

    Failing here, before aiosqlite, gives a clear error (and avoids aiosqlite's worker thread
    reporting a failed connect to an event loop that may be closed by then).
    """
    try:
        make_private_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"cannot create the database directory {path.parent}: {exc}") from exc
    try:
        create_private_file(path)
    except OSError as exc:
        raise StoreError(f"cannot create the database file {path}: {exc}") from exc
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database file {path}: {exc}") from exc


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # SQLAlchemy emits BEGIN itself (see _on_sqlite_begin); the driver's legacy implicit
    # transactions would skip BEGIN before SELECT and DDL.
    dbapi_connection.isolation_level = None
    _sqlite_pragmas(dbapi_connection)


def _sqlite_pragmas(dbapi_connection: DBAPIConnection | sqlite3.Connection) -> None:
    """The pragmas every connection to the file gets (the engine's and `run_write`'s alike)."""
    cursor = dbapi_connection.cursor()
    try:
        # WAL with synchronous=NORMAL: a committed transaction is in the WAL file (the OS cache) when the
        # commit returns, so it survives the process being killed; only a power loss or kernel crash can roll
        # back the last commits (the WAL is synced at checkpoints). docs/operations.md, "Durability of writes".
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


MIGRATION_LOCK = 0x6F6D5F6D69677261  # pg_advisory_xact_lock key: one hub process migrates at a time
BUCKET_LOCK = 0x6F6D5F6275636B74  # pg_advisory_xact_lock key: one roll-up writer at a time, across processes


def _upgrade_to_head(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":  # hub processes starting together: the others wait, then find it done
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "heads")


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _stats_to_json(bucket: Bucket) -> dict[str, list[float]]:
    return {name: s.to_list() for name, s in bucket.stats.items()}


def _bucket_from_row(row: Row[str, int, int, int, dict[str, Any]]) -> Bucket:
    server_id, resolution_s, start_ms, count, stats = row
    return Bucket(
        server_id,
        int(resolution_s),
        int(start_ms),
        int(count),
        {name: MetricStats.from_list(raw) for name, raw in (stats or {}).items()},
    )


_BUCKET_COLUMNS = (
    RollupRow.server_id,
    RollupRow.resolution_s,
    RollupRow.start_ms,
    RollupRow.count,
    RollupRow.stats,
)


READ_PAGE = 1_000
"""Rows per query of the long reads (`read_metric`): one page's rows are decoded on the event loop at once."""


class _SqliteWriter:
    """A `sqlite3` connection to the store's file on a thread of its own, for `Store.run_write`.

    Opened on first use, on that thread, with the engine's pragmas (WAL, `synchronous=NORMAL`, the busy
    timeout), in autocommit mode: each transaction is an explicit `BEGIN IMMEDIATE` ... `COMMIT`. Only
    its thread touches the connection. The caller holds the store's write lock for the whole transaction,
    so it never interleaves with the engine's writes in this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._used = False  # the thread starts with the first transaction

    def _transaction(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:  # on the writer thread
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
            _sqlite_pragmas(conn)
            self._conn = conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")  # returns once the transaction is in the WAL (see _on_sqlite_connect)
        except BaseException:
            # `fn` or the COMMIT failed (a full disk fails at COMMIT): end the transaction, so the next one
            # starts clean; the first error is the one raised.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    async def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """`fn` in one transaction on the writer thread. Cancelled, it still waits for the transaction to
        end (committed or rolled back) before re-raising, so the caller's write lock is held until then."""
        self._used = True
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._transaction, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved: the caller is gone, and so is the outcome
            raise

    def _close(self) -> None:  # on the writer thread
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._used:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)  # its one thread (if any) is idle now and ends


class Store:
    """Servers and roll-ups. Create with `await Store.open(url)`; `await close()` when done."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap an engine whose schema is already migrated; prefer `Store.open`."""
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_engine = engine.execution_options(**{_WRITE_OPTION: True})
        self._write_lock = asyncio.Lock()
        path = _sqlite_file(engine.url.render_as_string()) if self.dialect == "sqlite" else None
        self._sqlite_writer = _SqliteWriter(path) if path is not None else None

    @property
    def raw_writes(self) -> bool:
        """Whether `run_write` is available: a SQLite file (not PostgreSQL, not an in-memory database)."""
        return self._sqlite_writer is not None

    @property
    def raw_pg_writes(self) -> bool:
        """Whether `run_pg_write` is available: PostgreSQL through asyncpg (the default PostgreSQL driver)."""
        return self.dialect == "postgresql" and self.engine.driver == "asyncpg"

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect, configure and migrate to the newest schema.

        Creates the parent directory of a SQLite file. Raises ConfigError for an unsupported URL,
        StoreError when the database cannot be opened or migrated.
        """
        url = normalize_url(url)
        is_sqlite = url.startswith("sqlite")
        if is_sqlite:
            path = _sqlite_file(url)
            if path is not None:
                await asyncio.to_thread(_prepare_sqlite_file, path)
        try:
            engine = create_async_engine(url, json_serializer=json_dumps, json_deserializer=json_loads)
        except (ArgumentError, ImportError) as exc:
            shown = make_url(url).render_as_string(hide_password=True)
            raise ConfigError(f"cannot use database URL {shown!r}: {exc}") from exc
        if is_sqlite:
            event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
            event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        store = cls(engine)
        try:
            async with store._write() as conn:
                await conn.run_sync(_upgrade_to_head)
        except BaseException as exc:
            await engine.dispose()
            if isinstance(exc, StoreError):
                raise StoreError(f"cannot open or migrate the database: {exc.__cause__ or exc}") from exc
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection (and `run_write`'s). The store is unusable afterwards."""
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock:
            try:
                async with self._write_engine.begin() as conn:
                    yield conn
            except SQLAlchemyError as exc:
                raise StoreError(f"store write failed: {exc}") from exc

    async def run_write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn(connection)` as one write transaction on the SQLite file and return what it returns:
        `BEGIN IMMEDIATE`, `fn`, `COMMIT` (`ROLLBACK` when `fn` raises), on the store's writer thread,
        under the process's write lock, in one thread hop. When this returns the transaction is committed
        as durably as the engine's (WAL, `synchronous=NORMAL`). `fn` runs on another thread: it must touch
        nothing but the connection and its own arguments, and it holds every other write of this process
        while it runs, so keep it to a few statements (`executemany`). Only when `raw_writes`; raises
        StoreError when the database fails."""
        writer = self._sqlite_writer
        if writer is None:
            raise RuntimeError("run_write needs a SQLite file (see Store.raw_writes)")
        async with self._write_lock:
            try:
                return await writer.run(fn)
            except sqlite3.Error as exc:
                raise StoreError(f"store write failed: {exc}") from exc

    async def run_pg_write(self, fn: Callable[[Any], Awaitable[_T]]) -> _T:
        """Await `fn(connection)` (an `asyncpg.Connection` of the engine's pool) inside one asyncpg
        transaction and return what it returns, under the process's write lock: committed when this
        returns, rolled back when `fn` raises. For hot, small writes (prepared statements, `executemany`)
        without SQLAlchemy's statement building and result handling around each. Only when
        `raw_pg_writes`; raises StoreError when the database fails."""
        if not self.raw_pg_writes:
            raise RuntimeError("run_pg_write needs PostgreSQL through asyncpg (see Store.raw_pg_writes)")
        import asyncpg  # type: ignore[import-not-found, unused-ignore]

        async with self._write_lock:
            try:
                async with self.engine.connect() as conn:  # nothing runs through SQLAlchemy on it: no autobegin
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    assert driver is not None
                    async with driver.transaction():
                        return await fn(driver)
            except (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                raise StoreError(f"store write failed: {exc}") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    def _insert(self, entity: type[ServerRow] | type[RollupRow]) -> sqlite.Insert | postgresql.Insert:
        if self.dialect == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)

    # -- servers ------------------------------------------------------------------------------

    async def upsert_servers(self, servers: Sequence[ServerInfo], seen_ms: int) -> None:
        """Insert or update servers' metadata and set `last_seen`; `first_seen` is kept once set.
        A server listed twice is stored as its last entry."""
        rows = {
            s.id: {
                "id": s.id,
                "hostname": s.hostname,
                "role": s.role,
                "environment": s.environment,
                "location": s.location,
                "source": s.source,
                "tags": dict(s.tags),
                "first_seen": seen_ms,
                "last_seen": seen_ms,
            }
            for s in servers
        }
        if not rows:
            return
        stmt = self._insert(ServerRow)
        updated = ("hostname", "role", "environment", "location", "source", "tags", "last_seen")
        stmt = stmt.on_conflict_do_update(
            index_elements=[ServerRow.id], set_={name: stmt.excluded[name] for name in updated}
        )
        async with self._write() as conn:
            await conn.execute(stmt, list(rows.values()))

    async def load_servers(self) -> list[tuple[ServerInfo, int]]:
        """Every stored server with its `last_seen` (ms), ordered by id."""
        query = select(
            ServerRow.id,
            ServerRow.hostname,
            ServerRow.role,
            ServerRow.environment,
            ServerRow.location,
            ServerRow.source,
            ServerRow.tags,
            ServerRow.last_seen,
        ).order_by(ServerRow.id)
        async with self._read() as conn:
            result = await conn.execute(query)
            return [
                (
                    ServerInfo(
                        id=r.id,
                        hostname=r.hostname,
                        role=r.role,
                        environment=r.environment,
                        location=r.location,
                        source=r.source,
                        tags=dict(r.tags or {}),
                    ),
                    int(r.last_seen),
                )
                for r in result
            ]

    async def forget_server(self, server_id: str) -> None:
        """Delete a server and all its roll-ups. Forgetting an unknown id does nothing."""
        async with self._write() as conn:
            await conn.execute(delete(RollupRow).where(RollupRow.server_id == server_id))
            await conn.execute(delete(ServerRow).where(ServerRow.id == server_id))

    # -- roll-ups -----------------------------------------------------------------------------

    async def write_buckets(self, buckets: Sequence[Bucket], *, replace: bool = False) -> None:
        """Store buckets, in one transaction.

        By default a bucket is merged (`core.rollup.merge`) with the stored row of the same
        (server, resolution, start), so writing a bucket's points in two parts gives the same
        statistics as writing them at once. With `replace=True` stored rows are overwritten
        (for recomputed buckets). Buckets with the same key in `buckets` are merged first.
        """
        pending: dict[tuple[str, int, int], Bucket] = {}
        for b in buckets:
            seen = pending.get(b.key)
            pending[b.key] = b if seen is None else merge(seen, b)
        if not pending:
            return
        key_columns = tuple_(RollupRow.server_id, RollupRow.resolution_s, RollupRow.start_ms)
        async with self._write() as conn:
            if self.dialect == "postgresql":  # FOR UPDATE cannot lock a row not there yet: serialize writers
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({BUCKET_LOCK})")
            if not replace:
                for chunk in _chunks(list(pending), _KEY_CHUNK):
                    query = select(*_BUCKET_COLUMNS).where(key_columns.in_(chunk))
                    if self.dialect == "postgresql":
                        query = query.with_for_update()
                    for row in await conn.execute(query):
                        stored = _bucket_from_row(row)
                        pending[stored.key] = merge(stored, pending[stored.key])
            stmt = self._insert(RollupRow)
            stmt = stmt.on_conflict_do_update(
                index_elements=[RollupRow.server_id, RollupRow.resolution_s, RollupRow.start_ms],
                set_={"count": stmt.excluded.count, "stats": stmt.excluded.stats},
            )
            await conn.execute(
                stmt,
                [
                    {
                        "server_id": b.server,
                        "resolution_s": b.resolution_s,
                        "start_ms": b.start_ms,
                        "count": b.count,
                        "stats": _stats_to_json(b),
                    }
                    for b in pending.values()
                ],
            )

    async def read_buckets(
        self, server: str, resolution_s: int, since_ms: int, until_ms: int
    ) -> list[Bucket]:
        """A server's buckets with `since_ms <= start_ms < until_ms`, ascending."""
        query = (
            select(*_BUCKET_COLUMNS)
            .where(
                RollupRow.server_id == server,
                RollupRow.resolution_s == resolution_s,
                RollupRow.start_ms >= since_ms,
                RollupRow.start_ms < until_ms,
            )
            .order_by(RollupRow.start_ms)
        )
        async with self._read() as conn:
            return [_bucket_from_row(row) for row in await conn.execute(query)]

    async def read_metric(
        self, server: str, resolution_s: int, metric: str, since_ms: int, until_ms: int
    ) -> list[tuple[int, float | None]]:
        """`(start_ms, average of metric)` of a server's buckets with `since_ms <= start_ms < until_ms`,
        ascending; the average is None in a bucket without the metric. The database extracts the one
        metric from each bucket's JSON, so this decodes a small fraction of what `read_buckets` does; it
        reads `READ_PAGE` rows per query, so the event loop is never held for more than one page's rows."""
        total, n = RollupRow.stats[(metric, 2)].as_float(), RollupRow.stats[(metric, 3)].as_float()
        out: list[tuple[int, float | None]] = []
        after = since_ms - 1
        while True:
            query = (
                select(RollupRow.start_ms, total, n)
                .where(
                    RollupRow.server_id == server,
                    RollupRow.resolution_s == resolution_s,
                    RollupRow.start_ms > after,
                    RollupRow.start_ms < until_ms,
                )
                .order_by(RollupRow.start_ms)
                .limit(READ_PAGE)
            )
            async with self._read() as conn:
                rows = (await conn.execute(query)).all()
            out += [(int(start), s / c if s is not None and c else None) for start, s, c in rows]
            if len(rows) < READ_PAGE:
                return out
            after = out[-1][0]

    async def read_buckets_many(
        self, servers: Sequence[str], resolution_s: int, since_ms: int, until_ms: int
    ) -> list[Bucket]:
        """Like `read_buckets` for several servers; ordered by (server, start_ms)."""
        out: list[Bucket] = []
        async with self._read() as conn:
            for chunk in _chunks(sorted(set(servers)), _ID_CHUNK):
                query = (
                    select(*_BUCKET_COLUMNS)
                    .where(
                        RollupRow.server_id.in_(chunk),
                        RollupRow.resolution_s == resolution_s,
                        RollupRow.start_ms >= since_ms,
                        RollupRow.start_ms < until_ms,
                    )
                    .order_by(RollupRow.server_id, RollupRow.start_ms)
                )
                out.extend(_bucket_from_row(row) for row in await conn.execute(query))
        return out

    async def bucket_servers(self, resolution_s: int, since_ms: int, until_ms: int) -> list[str]:
        """Servers with at least one bucket of `resolution_s` starting in `[since_ms, until_ms)`, sorted."""
        query = (
            select(RollupRow.server_id)
            .where(
                RollupRow.resolution_s == resolution_s,
                RollupRow.start_ms >= since_ms,
                RollupRow.start_ms < until_ms,
            )
            .distinct()
            .order_by(RollupRow.server_id)
        )
        async with self._read() as conn:
            return list((await conn.execute(query)).scalars())

    async def bucket_span(self, resolution_s: int) -> tuple[int, int] | None:
        """`(earliest, latest)` bucket start of `resolution_s` over all servers; None when there is none."""
        query = select(func.min(RollupRow.start_ms), func.max(RollupRow.start_ms)).where(
            RollupRow.resolution_s == resolution_s
        )
        async with self._read() as conn:
            lo, hi = (await conn.execute(query)).one()
        if lo is None or hi is None:
            return None
        return int(lo), int(hi)

    async def latest_buckets(self, resolution_s: int) -> dict[str, int]:
        """Per server, the start (ms) of its newest stored bucket of `resolution_s`."""
        query = select(RollupRow.server_id, func.max(RollupRow.start_ms)).where(
            RollupRow.resolution_s == resolution_s
        ).group_by(RollupRow.server_id)
        async with self._read() as conn:
            return {str(sid): int(start) for sid, start in await conn.execute(query)}

    async def prune(self, resolution_s: int, older_than_ms: int) -> int:
        """Delete buckets of `resolution_s` starting before `older_than_ms`; returns how many."""
        stmt = delete(RollupRow).where(
            RollupRow.resolution_s == resolution_s, RollupRow.start_ms < older_than_ms
        )
        async with self._write() as conn:
            result = await conn.execute(stmt)
            return int(result.rowcount)
