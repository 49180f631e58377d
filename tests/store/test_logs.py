"""Stored logs (`store.logs.LogStore`) against a real SQLite file and a real PostgreSQL.

PostgreSQL: `OPENMANAGER_TEST_POSTGRES_URL` (default postgresql://postgres@127.0.0.1:5432/test). The
tests create a database of their own next to it (dropped afterwards), so they never touch other
tests' tables; they are skipped, with the reason, when the server or the asyncpg driver is missing.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, make_url, select, text

import openmanager.store.logs as logs_module
from openmanager.core.filters import LogsFilter
from openmanager.core.logorigin import OriginLogRecord, OriginRecord, log_origin
from openmanager.core.model import LogLevel, LogRecord, ServerInfo
from openmanager.sources.simulator import FleetSimulator
from openmanager.store import Store, alembic_config
from openmanager.store.logs import LogStore, glob_to_regex, logs_table
from openmanager.store.models import Base

from .conftest import T0

PG_URL = os.environ.get("OPENMANAGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
STORE_BACKENDS = ("sqlite",)  # conftest's `db_url`: the `logs` fixture below picks the backend itself


# -- PostgreSQL: a throwaway database per test session -------------------------------------------


def _pg_admin(sql: str) -> None:
    """Run one statement on the configured database, in a thread of its own (fixtures may already be
    inside the test's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _pg_admin_async(sql)).result()


async def _pg_admin_async(sql: str) -> None:
    import asyncpg  # type: ignore[import-not-found, unused-ignore]

    url = make_url(PG_URL)
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1", port=url.port or 5432, user=url.username or "postgres",
        password=url.password, database=url.database or "postgres", timeout=5,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    try:
        import asyncpg  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need the asyncpg driver (pip install asyncpg)")
    name = f"om_logs_test_{uuid.uuid4().hex[:12]}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except (TimeoutError, OSError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    except Exception as exc:  # asyncpg's own errors: auth, permissions
        pytest.skip(f"cannot create a test database on {PG_URL}: {type(exc).__name__}: {exc}")
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
async def logs(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[LogStore]:
    url = db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = await Store.open(url)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(logs_table.delete())  # the PostgreSQL database is shared by the session
        yield LogStore(store)
    finally:
        await store.close()


def rec(i: int, server: str = "web-01", level: LogLevel = LogLevel.INFO, message: str | None = None,
        **fields: object) -> LogRecord:
    return LogRecord(T0 + i, server, level, "svc", message if message is not None else f"line {i}", dict(fields))


def messages(records: list[dict[str, Any]]) -> list[str]:
    return [r["message"] for r in records]


# -- write and search ----------------------------------------------------------------------------


async def test_write_and_read_back_in_topic_shape(logs: LogStore) -> None:
    topic_shaped = {"ts": T0 + 5, "server": "db-01", "level": "ERROR", "service": "postgres",
                    "message": "no space left", "incident": "disk_full", "incident_id": 3}
    written = await logs.write([rec(1, request_id="ab12"), topic_shaped, rec(2)])
    assert written == 3
    got = await logs.search()
    assert got == [rec(1, request_id="ab12").to_dict(), rec(2).to_dict(), topic_shaped]
    assert got[2]["level"] == "ERROR" and isinstance(got[2]["incident_id"], int)


async def test_fields_and_text_of_any_script_come_back_as_written(logs: LogStore) -> None:
    """Non-ASCII text and nested fields round-trip (SQLite stores `fields` as JSON text written apart from
    the engine's JSON type, `Store.run_write`), and the running byte total is the stored sizes."""
    assert await logs.stored_bytes() == 0
    odd = rec(1, message="überlauf ✓ 磁盘已满", nested={"a": [1, 2.5, None, "ß"], "b": {"c": True}}, empty={})
    assert await logs.write([odd, rec(2)]) == 2
    assert await logs.search() == [odd.to_dict(), rec(2).to_dict()]
    assert await logs.stored_bytes() == await _actual_bytes(logs) > len("überlauf ✓ 磁盘已满".encode())


async def test_write_skips_records_without_ts_server_or_level(logs: LogStore) -> None:
    bad: list[dict[str, Any]] = [
        {"ts": "soon", "server": "a", "level": "INFO", "service": "s", "message": "m"},
        {"ts": T0, "server": "", "level": "INFO", "service": "s", "message": "m"},
        {"ts": T0, "server": "a", "level": "LOUD", "service": "s", "message": "m"},
        {"ts": T0, "server": "a", "level": 40, "service": "s", "message": "kept"},
    ]
    assert await logs.write(bad) == 1
    assert await logs.write([]) == 0
    assert [(r["message"], r["level"]) for r in await logs.search()] == [("kept", "ERROR")]


def agent_rec(origin: int, seq: int, message: str) -> OriginRecord:
    record = OriginLogRecord(T0 + seq, "agent-01", LogLevel.INFO, "svc", message, {}, origin=origin, seq=seq)
    out = record.to_dict()
    assert isinstance(out, OriginRecord)
    return out


async def test_agent_records_written_again_are_stored_once(logs: LogStore) -> None:
    """The same (origin, seq) stored twice is kept once: whole batches again, overlapping batches, one
    batch holding both copies; records without an origin and other origins are never skipped."""
    one, other = log_origin(1, "00000000000000aa"), log_origin(1, "00000000000000bb")
    assert one != other and one > 0 and other > 0
    assert await logs.stored_bytes() == 0  # the running total is kept from here on
    plain = rec(100, message="same text, no origin")
    first = [agent_rec(one, s, f"a{s}") for s in (1, 2, 3)]
    assert await logs.write([*first, plain]) == 4
    assert await logs.write([*first, plain]) == 1  # only the record without an origin is new
    regrouped = [agent_rec(one, s, f"a{s}") for s in (2, 3, 4, 5)]
    assert await logs.write([*regrouped, agent_rec(one, 5, "a5")]) == 2  # 4 and 5, once
    assert await logs.write([agent_rec(other, 1, "b1"), rec(100, message="same text, no origin")]) == 2
    got = messages(await logs.search(limit=100))
    assert sorted(got) == sorted(["a1", "a2", "a3", "a4", "a5", "b1"] + ["same text, no origin"] * 3)
    assert await logs.stored_bytes() == sum(len(m) for m in got)  # the running total counts each once


async def test_origin_stays_out_of_the_record(logs: LogStore) -> None:
    record = agent_rec(log_origin(7, "00000000000000cc"), 9, "hello")
    assert dict(record) == {"ts": T0 + 9, "server": "agent-01", "level": "INFO", "service": "svc", "message": "hello"}
    await logs.write([record])
    assert await logs.search() == [dict(record)]


async def test_limit_takes_the_newest_and_returns_them_oldest_first(logs: LogStore) -> None:
    # written out of time order, with a tie at one timestamp (ties keep insertion order)
    order = [5, 1, 9, 3, 7, 0, 8, 2, 6, 4]
    await logs.write([rec(i) for i in order])
    await logs.write([rec(9, message="line 9 again")])
    assert messages(await logs.search(limit=4)) == ["line 7", "line 8", "line 9", "line 9 again"]
    assert messages(await logs.search(limit=100)) == [f"line {i}" for i in range(10)] + ["line 9 again"]
    assert messages(await logs.search(limit=0)) == ["line 9 again"]  # clamped to 1


async def test_since_until_window(logs: LogStore) -> None:
    await logs.write([rec(i) for i in range(20)])
    assert messages(await logs.search(since_ms=T0 + 15)) == [f"line {i}" for i in range(15, 20)]
    assert messages(await logs.search(until_ms=T0 + 3)) == ["line 0", "line 1", "line 2"]
    window = await logs.search(since_ms=T0 + 5, until_ms=T0 + 12, limit=3)
    assert messages(window) == ["line 9", "line 10", "line 11"]


async def test_server_ids_globs_and_lists(logs: LogStore) -> None:
    servers = ["web-01", "web-02", "web-10", "db-01", "db-02", "api-1"]
    await logs.write([rec(i, server=s) for i, s in enumerate(servers)])

    def names(got: list[dict[str, Any]]) -> list[str]:
        return [r["server"] for r in got]

    assert names(await logs.search(server="db-01")) == ["db-01"]
    assert names(await logs.search(server="web-*")) == ["web-01", "web-02", "web-10"]
    assert names(await logs.search(server="web-0?,db-02")) == ["web-01", "web-02", "db-02"]
    assert names(await logs.search(server=["api-1", "db-0[!1]"])) == ["db-02", "api-1"]
    assert names(await logs.search(server="WEB-*")) == []  # case-sensitive, like the topic filter
    assert names(await logs.search(server="nope")) == []
    assert len(await logs.search(server=" , ")) == len(servers)  # nothing named: no filter


async def test_minimum_level(logs: LogStore) -> None:
    await logs.write([rec(i, level=lv) for i, lv in enumerate(LogLevel)])
    assert [r["level"] for r in await logs.search(min_level=LogLevel.WARN)] == ["WARN", "ERROR", "CRITICAL"]
    assert [r["level"] for r in await logs.search(min_level="error")] == ["ERROR", "CRITICAL"]
    assert len(await logs.search(min_level="DEBUG")) == len(LogLevel)
    with pytest.raises(ValueError):
        await logs.search(min_level="LOUD")


async def test_filters_combine(logs: LogStore) -> None:
    await logs.write([
        rec(0, "db-01", LogLevel.ERROR, "disk full on /var/lib/postgresql"),
        rec(1, "db-01", LogLevel.INFO, "disk usage 80%"),
        rec(2, "web-01", LogLevel.ERROR, "disk quota exceeded"),
        rec(3, "db-02", LogLevel.CRITICAL, "Disk failure on sdb"),
        rec(4, "db-02", LogLevel.ERROR, "replication lag"),
    ])
    got = await logs.search(server="db-*", min_level="ERROR", contains="disk", since_ms=T0)
    assert messages(got) == ["disk full on /var/lib/postgresql", "Disk failure on sdb"]


# -- contains ------------------------------------------------------------------------------------


async def test_contains_is_case_insensitive_and_escapes_wildcards(logs: LogStore) -> None:
    await logs.write([
        rec(0, message="Accepted publickey for deploy from 10.0.1.2 port 40000"),
        rec(1, message="could not write to file \"pg_wal/xlogtemp.123\": No space left on device"),
        rec(2, message="disk usage 97% on /var/lib/postgresql"),
        rec(3, message="disk usage 9 on /var"),
        rec(4, message="100% done, no_space flag"),
        rec(5, message="say \"hello\" to O'Brien"),
    ])
    assert messages(await logs.search(contains="no space LEFT")) == [
        "could not write to file \"pg_wal/xlogtemp.123\": No space left on device"
    ]
    assert messages(await logs.search(contains="Accepted PUBLICKEY for")) == [
        "Accepted publickey for deploy from 10.0.1.2 port 40000"
    ]
    # % and _ are literal characters, not LIKE wildcards
    assert messages(await logs.search(contains="97%")) == ["disk usage 97% on /var/lib/postgresql"]
    assert messages(await logs.search(contains="no_space")) == ["100% done, no_space flag"]
    # quotes cannot break out of the full-text query
    assert messages(await logs.search(contains='"hello" to O\'Brien')) == ["say \"hello\" to O'Brien"]
    assert messages(await logs.search(contains="nothing like this")) == []


async def test_contains_inside_words_depends_on_the_database(logs: LogStore) -> None:
    """The documented difference: SQLite (trigram FTS5) matches any substring; PostgreSQL's word index
    needs each typed word to begin a word of the message."""
    await logs.write([rec(0, message="automatic vacuum of table orders"), rec(1, message="checkpoint complete")])
    inside = messages(await logs.search(contains="utomatic vac"))
    short = messages(await logs.search(contains="ck"))  # under three characters: no trigram index
    if logs.dialect == "sqlite":
        assert inside == ["automatic vacuum of table orders"]
        assert short == ["checkpoint complete"]
    else:
        assert inside == []
        assert short == []
    assert messages(await logs.search(contains="Automatic VAC")) == ["automatic vacuum of table orders"]
    assert messages(await logs.search(contains="check")) == ["checkpoint complete"]


def _simulated_records(n_steps: int = 60) -> list[LogRecord]:
    sim = FleetSimulator(servers=16, seed=11, log_rate=2.0, first_incident_s=(5.0, 5.0))
    out: list[LogRecord] = []
    for step in range(n_steps):
        out.extend(sim.step(T0 + step * 1000, 1.0)[1])
    return out


class _NoView:
    def info(self, server_id: str) -> ServerInfo | None:
        return None

    def context(self, server_id: str, sample: Any = None, ts: Any = None) -> None:
        return None


async def test_contains_agrees_with_the_logs_topic_filter(logs: LogStore) -> None:
    """On realistic lines, search keeps what the `logs` topic's `contains` filter keeps: all of it on
    SQLite; on PostgreSQL the same for whole words and word beginnings, and never anything else."""
    records = _simulated_records()
    assert len(records) > 1000
    await logs.write(records)
    word_terms = ["requests", "DISK", "Task", "connection", "upstream timed out", "slow request", "GET /v1",
                  "scrape ok", "Temperature_Celsius"]
    inner_terms = ["equests/1", "ool: 1", "ing started by", "ms,"]
    for term in word_terms + inner_terms:
        expected = [r["message"] for r in LogsFilter(contains=term).select([r.to_dict() for r in records], _NoView())]
        got = messages(await logs.search(contains=term, limit=10_000))
        assert expected, term  # every term occurs, or the comparison proves nothing
        if logs.dialect == "sqlite" or term in word_terms:
            assert got == expected, term  # records were written in time order: same order
            # a small limit: the newest matches (on SQLite answered by the probe of the newest rows)
            assert messages(await logs.search(contains=term, limit=3)) == expected[-3:], term
        else:
            assert set(got) <= set(expected), term


async def test_contains_probe_and_index_give_the_same_answer(logs: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite answers a term from the newest rows when they hold enough matches, else from the index;
    both must give the newest matches, whatever the window size."""
    records = _simulated_records(30)
    await logs.write(records)
    for window in (50, 1_000, 100_000):
        monkeypatch.setattr(logs_module, "PROBE_ROWS", window)
        for term, limit in (("requests", 20), ("requests", 400), ("slow", 5), ("Temperature_Celsius is", 10)):
            expected = [r.message for r in records if term.casefold() in r.message.casefold()][-limit:]
            assert expected, term
            assert messages(await logs.search(contains=term, limit=limit)) == expected, (window, term, limit)


# -- retention -----------------------------------------------------------------------------------


async def _actual_bytes(logs: LogStore) -> int:
    async with logs.store.engine.connect() as conn:
        return int((await conn.execute(select(text("coalesce(sum(size), 0)")).select_from(logs_table))).scalar_one())


async def test_prune_by_age(logs: LogStore) -> None:
    await logs.write([rec(i) for i in range(50)])
    assert await logs.prune(T0 + 30) == (30, 0)
    assert await logs.prune(T0 + 30) == (0, 0)
    assert messages(await logs.search(limit=1000)) == [f"line {i}" for i in range(30, 50)]
    assert await logs.stored_bytes() == await _actual_bytes(logs)


async def test_prune_by_size_deletes_the_oldest(logs: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs_module, "PRUNE_PAGE", 7)  # several pages per prune
    # 100 records of exactly 100 bytes each (message only, no fields)
    await logs.write([rec(i, message=f"{i:03d}" + "x" * 97) for i in range(100)])
    assert await logs.stored_bytes() == 10_000 == await _actual_bytes(logs)
    assert await logs.prune(0, 2_550) == (0, 75)
    left = await logs.search(limit=1000)
    assert [int(m[:3]) for m in messages(left)] == list(range(75, 100))
    assert await logs.stored_bytes() == 2_500 == await _actual_bytes(logs)
    # age first, then size; fields count towards the size
    await logs.write([rec(200 + i, message="y" * 50, k="v" * 40) for i in range(10)])
    size_each = 50 + len('{"k":"' + "v" * 40 + '"}')
    assert await logs.stored_bytes() == 2_500 + 10 * size_each == await _actual_bytes(logs)
    by_age, by_size = await logs.prune(T0 + 90, 6 * size_each)
    assert (by_age, by_size) == (15, 10 + 4)  # 90..99 and four of the new ones
    assert [r["ts"] for r in await logs.search(limit=1000)] == [T0 + 200 + i for i in range(4, 10)]
    assert await logs.stored_bytes() == 6 * size_each == await _actual_bytes(logs)
    assert await logs.prune(0, None) == (0, 0)


async def test_running_total_survives_a_new_logstore(logs: LogStore) -> None:
    await logs.write([rec(i, message="z" * 10) for i in range(10)])
    fresh = LogStore(logs.store)  # a restarted hub: counts once, then keeps the running figure
    assert await fresh.stored_bytes() == 100
    await fresh.write([rec(20, message="z" * 5)])
    assert await fresh.stored_bytes() == 105 == await _actual_bytes(fresh)
    assert await fresh.prune(0, 50) == (0, 6)
    assert await fresh.stored_bytes() == 45 == await _actual_bytes(fresh)


async def test_forget_server(logs: LogStore) -> None:
    await logs.write([rec(i, server="gone" if i % 2 else "kept", message=f"disk line {i}") for i in range(10)])
    before = await logs.stored_bytes()
    assert await logs.forget_server("gone") == 5
    assert await logs.forget_server("never-seen") == 0
    assert {r["server"] for r in await logs.search(limit=100)} == {"kept"}
    assert messages(await logs.search(contains="disk line 3")) == []  # gone from the text index too
    assert await logs.stored_bytes() == before - 5 * len("disk line 1") == await _actual_bytes(logs)


# -- SQLite specifics ----------------------------------------------------------------------------


def _fts_consistent(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO logs_fts(logs_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()


async def test_sqlite_fts_index_follows_deletes(store: Store, db_path: Path) -> None:
    logs = LogStore(store)
    await logs.write([rec(i, message=f"alpha {i} omega") for i in range(30)])
    await logs.prune(T0 + 10, None)
    await logs.forget_server("web-01")
    await logs.write([rec(100, message="alpha again")])
    _fts_consistent(db_path)
    assert messages(await logs.search(contains="alpha")) == ["alpha again"]
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM logs_fts WHERE logs_fts MATCH '\"omega\"'").fetchone() == (0,)
    finally:
        conn.close()


async def test_sqlite_without_fts_falls_back_to_like(store: Store, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        for trig in ("logs_fts_ai", "logs_fts_ad", "logs_fts_au"):
            conn.execute(f"DROP TRIGGER {trig}")
        conn.execute("DROP TABLE logs_fts")
        conn.commit()
    finally:
        conn.close()
    logs = LogStore(store)
    await logs.write([rec(0, message="Slow Request took 3000ms"), rec(1, message="fast")])
    assert messages(await logs.search(contains="slow request")) == ["Slow Request took 3000ms"]


def test_logs_migrations_match_the_table_and_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    command.upgrade(alembic_config(url), "heads")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            only_logs = {"include_object": lambda _o, name, kind, _r, _c: kind != "table" or name == "logs"}
            assert compare_metadata(MigrationContext.configure(conn, opts=only_logs), Base.metadata) == []
            heads = {r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
            assert "0007_log_dedupe" in heads
            columns = {c["name"] for c in inspect(conn).get_columns("logs")}
            assert {"origin", "origin_seq"} <= columns
        command.downgrade(alembic_config(url), "0002_logs_fts")  # the dedupe columns alone
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("logs")}
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
            assert not {"origin", "origin_seq"} & columns and "uq_logs_origin" not in names
            assert {"logs_fts", "logs_fts_ai"} <= names  # the FTS table and its triggers survive
        command.downgrade(alembic_config(url), "0002_logs")  # the FTS part alone
        with engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
            assert "logs" in names and not any(n.startswith("logs_fts") for n in names)
        command.downgrade(alembic_config(url), "logs@0001")  # the whole branch
        with engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
            assert not any(n.startswith(("logs", "ix_logs")) for n in names)
            assert {"servers", "rollups"} <= names
    finally:
        engine.dispose()


def test_glob_to_regex() -> None:
    import re

    cases = {"web-*": ["web-01", "web-"], "db-0?": ["db-01"], "a[!b]c": ["aac"], "x.y": ["x.y"], "[a-c]1": ["b1"]}
    misses = {"web-*": ["xweb-01"], "db-0?": ["db-011"], "a[!b]c": ["abc"], "x.y": ["xzy"], "[a-c]1": ["d1"]}
    for glob, hits in cases.items():
        pattern = glob_to_regex(glob)
        assert all(re.search(pattern, h) for h in hits), (glob, pattern)
        assert not any(re.search(pattern, m) for m in misses[glob]), (glob, pattern)
