from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from openmanager.core.errors import ConfigError
from openmanager.core.model import ServerInfo
from openmanager.core.rollup import Bucket, MetricStats, bucket_points
from openmanager.store import Store, StoreError, alembic_config, normalize_url
from openmanager.store.schema import include_object, metadata

from .conftest import DAY, MIN, T0

HEADS = set(ScriptDirectory.from_config(alembic_config()).get_heads())  # one per feature branch


def _sync(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@db:5432/om", "postgresql+asyncpg://u:p@db:5432/om"),
        ("postgres://u:p@db/om", "postgresql+asyncpg://u:p@db/om"),
        ("postgresql+psycopg2://u@db/om", "postgresql+asyncpg://u@db/om"),
        ("postgresql+asyncpg://u@db/om", "postgresql+asyncpg://u@db/om"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@db/om", "not a url"])
def test_normalize_url_rejects_unsupported(url: str) -> None:
    with pytest.raises(ConfigError):
        normalize_url(url)


async def test_open_creates_parent_dir_and_migrates(store: Store, db_path: Path) -> None:
    # the parent directory did not exist before; sqlite3 would not create it
    with _sync(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"servers", "rollups", "alembic_version"} <= tables
        assert {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")} == HEADS
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "ix_rollups_resolution_start" in indexes
        columns = [r[1] for r in conn.execute("PRAGMA table_info(rollups)")]
        assert columns == ["server_id", "resolution_s", "start_ms", "count", "stats"]
        pk = sorted((r[5], r[1]) for r in conn.execute("PRAGMA table_info(rollups)") if r[5])
        assert [name for _, name in pk] == ["server_id", "resolution_s", "start_ms"]
    conn.close()


async def test_sqlite_pragmas(store: Store, db_path: Path) -> None:
    conn = _sync(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
    async with store.engine.connect() as c:
        assert (await c.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await c.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert (await c.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10_000


async def test_reopen_is_idempotent(db_url: str, db_path: Path) -> None:
    for _ in range(2):
        s = await Store.open(db_url)
        await s.close()
    conn = _sync(db_path)
    try:
        assert {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")} == HEADS
    finally:
        conn.close()


async def test_open_failure_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        await Store.open(f"sqlite:///{tmp_path}")  # a directory, not a database file


def _write_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 100)


async def test_open_corrupt_file_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    _write_garbage(path)
    with pytest.raises(StoreError):
        await Store.open(f"sqlite:///{path}")


async def test_servers_upsert_load_forget(store: Store) -> None:
    a = ServerInfo("a", "web-01", role="web", environment="aws", location="eu", source="sim", tags={"t": "1"})
    b = ServerInfo("b", "db-01", role="database")
    await store.upsert_servers([a, b], seen_ms=T0)
    a2 = ServerInfo("a", "web-01b", role="web", environment="aws", location="us", source="sim", tags={})
    await store.upsert_servers([a2], seen_ms=T0 + 5_000)
    await store.upsert_servers([], seen_ms=T0 + 9_000)
    assert await store.load_servers() == [(a2, T0 + 5_000), (b, T0)]
    await store.write_buckets(bucket_points("a", [(T0, {"cpu": 1.0})], 60))
    await store.write_buckets(bucket_points("b", [(T0, {"cpu": 1.0})], 60))
    await store.forget_server("a")
    await store.forget_server("missing")
    assert await store.load_servers() == [(b, T0)]
    assert await store.read_buckets("a", 60, 0, T0 + DAY) == []
    assert len(await store.read_buckets("b", 60, 0, T0 + DAY)) == 1


async def test_first_seen_is_kept(store: Store, db_path: Path) -> None:
    s = ServerInfo("a", "web-01")
    await store.upsert_servers([s], seen_ms=T0)
    await store.upsert_servers([s], seen_ms=T0 + 1_000)
    conn = _sync(db_path)
    try:
        assert conn.execute("SELECT first_seen, last_seen FROM servers").fetchall() == [(T0, T0 + 1_000)]
    finally:
        conn.close()


async def test_write_read_buckets(store: Store) -> None:
    points = [(T0 + i * 10_000, {"cpu": float(i), "memory": 50.0 + i}) for i in range(30)]
    buckets = bucket_points("s1", points, 60)
    await store.write_buckets(buckets)
    await store.write_buckets(bucket_points("s2", points, 60))
    assert await store.read_buckets("s1", 60, 0, T0 + DAY) == buckets
    # half-open range on start_ms
    assert await store.read_buckets("s1", 60, T0 + MIN, T0 + 3 * MIN) == buckets[1:3]
    assert await store.read_buckets("s1", 3600, 0, T0 + DAY) == []
    assert await store.read_buckets("nope", 60, 0, T0 + DAY) == []
    many = await store.read_buckets_many(["s2", "s1"], 60, T0, T0 + MIN)
    assert [(b.server, b.start_ms) for b in many] == [("s1", T0), ("s2", T0)]
    assert await store.bucket_servers(60, T0, T0 + DAY) == ["s1", "s2"]
    assert await store.bucket_span(60) == (T0, T0 + 4 * MIN)
    assert await store.bucket_span(3600) is None


async def test_write_buckets_merges_with_stored_rows(store: Store) -> None:
    points = [
        (T0 + i * 1_000, {"cpu": (i % 13) * 0.5, **({"disk": 70.0 + i} if i % 4 else {})}) for i in range(120)
    ]
    expected = bucket_points("s", points, 60)
    # three writes: a first part, then an overlapping batch holding the same key twice
    await store.write_buckets(bucket_points("s", points[:45], 60))
    rest = bucket_points("s", points[45:50], 60) + bucket_points("s", points[50:], 60)
    await store.write_buckets(rest)
    assert await store.read_buckets("s", 60, 0, T0 + DAY) == expected


async def test_write_buckets_replace_overwrites(store: Store) -> None:
    b = Bucket("s", 3600, T0, 2, {"cpu": MetricStats(1.0, 3.0, 4.0, 2)})
    await store.write_buckets([b])
    again = Bucket("s", 3600, T0, 1, {"cpu": MetricStats(5.0, 5.0, 5.0, 1)})
    await store.write_buckets([again], replace=True)
    assert await store.read_buckets("s", 3600, 0, T0 + DAY) == [again]
    await store.write_buckets([])


async def test_prune_by_age(store: Store) -> None:
    minutes = bucket_points("s", [(T0 + i * MIN, {"cpu": 1.0}) for i in range(10)], 60)
    hours = bucket_points("s", [(T0, {"cpu": 1.0})], 3600)
    await store.write_buckets(minutes + hours)
    assert await store.prune(60, T0 + 4 * MIN) == 4
    assert await store.prune(60, T0 + 4 * MIN) == 0
    assert [b.start_ms for b in await store.read_buckets("s", 60, 0, T0 + DAY)] == [
        T0 + i * MIN for i in range(4, 10)
    ]
    assert await store.read_buckets("s", 3600, 0, T0 + DAY) == hours


async def test_concurrent_merging_writers_lose_nothing(store: Store, db_url: str) -> None:
    """Read-merge-write is atomic: within one Store (lock) and across two on one file (BEGIN IMMEDIATE)."""
    other = await Store.open(db_url)
    try:

        def one(i: int) -> list[Bucket]:
            return bucket_points("s", [(T0 + i, {"cpu": float(i)})], 60)

        servers = [ServerInfo(f"x{i}", "h") for i in range(5)]
        await asyncio.gather(
            *((store if i % 2 else other).write_buckets(one(i)) for i in range(40)),
            store.upsert_servers(servers, T0),
            other.upsert_servers(servers, T0 + 1),
        )
    finally:
        await other.close()
    (b,) = await store.read_buckets("s", 60, 0, T0 + DAY)
    assert b.count == 40
    assert b.stats["cpu"] == MetricStats(0.0, 39.0, float(sum(range(40))), 40, float(sum(i * i for i in range(40))))


def test_models_match_migrations(tmp_path: Path) -> None:
    """The packaged migrations, run the way the `alembic` CLI would, create exactly the models' schema."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    command.upgrade(alembic_config(url), "heads")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": include_object})
            assert compare_metadata(context, metadata) == []
            assert {r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")} == HEADS
        command.downgrade(alembic_config(url), "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
