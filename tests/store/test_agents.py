"""Agents in the store: tokens stored hashed, revocation, acknowledged seqs with group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from openmanager.core.errors import NotFoundError, ValidationError
from openmanager.store import Store
from openmanager.store.agents import (
    TOKEN_PREFIX,
    AckRecorder,
    AckRevoked,
    AgentExistsError,
    AgentStore,
    hash_token,
)


async def test_create_shows_the_token_once_and_stores_only_its_hash(store: Store, db_path: Path) -> None:
    agents = AgentStore(store)
    token = await agents.create("web-07", now_ms=1000)
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name, token_hash, created_at, last_seq FROM agents").fetchall()
        dump = "\n".join(conn.iterdump())
    assert rows == [("web-07", hash_token(token), 1000, 0)]
    assert token not in dump
    record = await agents.authenticate(token)
    assert record is not None and record.name == "web-07" and record.active
    assert await agents.authenticate(token + "x") is None
    assert await agents.authenticate("") is None
    assert await agents.authenticate(None) is None


async def test_names_are_unique_and_validated(store: Store) -> None:
    agents = AgentStore(store)
    await agents.create("db-01")
    with pytest.raises(AgentExistsError):
        await agents.create("db-01")
    for bad in ("", "-x", "has space", "a/b", "x" * 129):
        with pytest.raises(ValidationError):
            await agents.create(bad)
    assert [a.name for a in await agents.list()] == ["db-01"]


async def test_revoke_refuses_the_token_and_a_new_one_can_be_issued(store: Store) -> None:
    agents = AgentStore(store)
    old = await agents.create("cache-1")
    record = await agents.authenticate(old)
    assert record is not None
    assert await agents.record_acks({record.id: (42, 5000)}) == set()
    revoked = await agents.revoke("cache-1", now_ms=7000)
    assert revoked.revoked_at == 7000 and not revoked.active
    assert (await agents.revoke("cache-1", now_ms=9000)).revoked_at == 7000  # idempotent
    assert await agents.authenticate(old) is None
    with pytest.raises(NotFoundError):
        await agents.revoke("nobody")
    new = await agents.create("cache-1")  # re-issued: new token, same agent, progress kept
    assert await agents.authenticate(old) is None
    again = await agents.authenticate(new)
    assert again is not None and again.id == record.id and again.last_seq == 42 and again.active


async def test_record_acks_never_moves_backwards_and_reports_revoked(store: Store) -> None:
    agents = AgentStore(store)
    a = await agents.authenticate(await agents.create("a"))
    b = await agents.authenticate(await agents.create("b"))
    assert a is not None and b is not None
    assert await agents.record_acks({a.id: (10, 1), b.id: (3, 1)}) == set()
    assert await agents.record_acks({a.id: (7, 2)}) == set()
    await agents.revoke("b")
    assert await agents.record_acks({a.id: (11, 3), b.id: (4, 3), 999: (1, 3)}) == {b.id, 999}
    by_name = {r.name: r for r in await agents.list()}
    assert (by_name["a"].last_seq, by_name["a"].last_seen) == (11, 3)
    assert by_name["b"].last_seq == 3  # a revoked agent's ack is not recorded


async def test_ack_recorder_groups_concurrent_acks_into_few_commits(store: Store) -> None:
    agents = AgentStore(store)
    records = [await agents.authenticate(await agents.create(f"n{i}")) for i in range(50)]
    recorder = AckRecorder(agents)
    await asyncio.gather(*(recorder.record(r.id, 5) for r in records if r is not None))
    assert recorder.commits < 10
    assert {r.last_seq for r in await agents.list()} == {5}
    await agents.revoke("n3")
    n3 = next(r for r in records if r is not None and r.name == "n3")
    with pytest.raises(AckRevoked):
        await recorder.record(n3.id, 6)
