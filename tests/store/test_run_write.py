"""`Store.run_write`: a write transaction as a plain function on the store's SQLite writer thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from openmanager.store import Store
from openmanager.store.agents import AgentStore
from openmanager.store.db import StoreError


def _last_seq(db_path: Path, name: str) -> int:
    with sqlite3.connect(db_path) as conn:
        (seq,) = conn.execute("SELECT last_seq FROM agents WHERE name = ?", (name,)).fetchone()
    return int(seq)


async def _held_write(store: Store) -> tuple[asyncio.Task[None], threading.Event]:
    """A `run_write` of agent `a`'s seq (5) that holds its transaction open until the event is set: the
    running task and that event."""
    await AgentStore(store).create("a")
    entered, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE agents SET last_seq = 5 WHERE name = 'a'")
        entered.set()
        release.wait(10)

    task = asyncio.create_task(store.run_write(slow))
    assert await asyncio.to_thread(entered.wait, 10)
    return task, release


async def test_raw_writes_only_on_a_sqlite_file(store: Store) -> None:
    assert store.raw_writes is (store.dialect == "sqlite")
    if not store.raw_writes:
        with pytest.raises(RuntimeError):
            await store.run_write(lambda conn: None)


async def test_a_recorded_ack_is_committed_when_record_acks_returns(store: Store, db_path: Path) -> None:
    agents = AgentStore(store)
    a = await agents.authenticate(await agents.create("a"))
    assert a is not None
    assert await agents.record_acks({a.id: (9, 1234)}) == set()
    assert _last_seq(db_path, "a") == 9  # another connection sees it: committed, not just written


async def test_a_failing_function_rolls_back_and_raises_store_error(store: Store, db_path: Path) -> None:
    agents = AgentStore(store)
    await agents.create("a")

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE agents SET last_seq = 77 WHERE name = 'a'")
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreError):
        await store.run_write(half_then_fail)
    assert _last_seq(db_path, "a") == 0
    assert await store.run_write(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1  # usable again


async def test_a_cancelled_caller_keeps_the_write_lock_until_the_transaction_ended(store: Store, db_path: Path) -> None:
    task, release = await _held_write(store)
    task.cancel()
    await asyncio.sleep(0)  # the cancellation is delivered; the transaction is still running
    assert not task.done() and store._write_lock.locked()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not store._write_lock.locked()
    assert _last_seq(db_path, "a") == 5  # it ran to its end (committed); only the caller went away


async def test_engine_writes_wait_for_a_running_transaction(store: Store, db_path: Path) -> None:
    raw, release = await _held_write(store)
    agents = AgentStore(store)
    other = asyncio.create_task(agents.create("b"))  # an engine write: it queues on the write lock
    for _ in range(1000):  # until it waits for the lock (a few steps of the loop)
        if store._write_lock._waiters:
            break
        await asyncio.sleep(0)
    assert store._write_lock._waiters and not other.done()
    release.set()
    await raw
    await other
    assert {r.name for r in await agents.list()} == {"a", "b"}


async def test_run_pg_write_commits_when_it_returns_and_rolls_back_on_failure(store: Store) -> None:
    assert store.raw_pg_writes is (store.dialect == "postgresql")  # asyncpg: the only PostgreSQL driver here
    if not store.raw_pg_writes:
        with pytest.raises(RuntimeError):
            await store.run_pg_write(lambda conn: asyncio.sleep(0))
        return
    agents = AgentStore(store)
    await agents.create("a")

    async def half_then_fail(conn: Any) -> None:
        await conn.execute("UPDATE agents SET last_seq = 77 WHERE name = 'a'")
        await conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreError):
        await store.run_pg_write(half_then_fail)
    record = await agents.get("a")  # read on another pooled connection
    assert record is not None and record.last_seq == 0

    async def update(conn: Any) -> int:
        await conn.execute("UPDATE agents SET last_seq = 5 WHERE name = 'a'")
        return 1

    assert await store.run_pg_write(update) == 1
    record = await agents.get("a")
    assert record is not None and record.last_seq == 5  # committed when run_pg_write returned
