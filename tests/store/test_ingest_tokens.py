"""Ingest tokens in the store: shown once, stored hashed, revoked at once, a revoked name issued anew."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openmanager.core.errors import ConflictError, NotFoundError, ValidationError
from openmanager.store import Store
from openmanager.store.agents import hash_token
from openmanager.store.ingest_tokens import INGEST_TOKEN_PREFIX, IngestTokenStore


async def test_create_authenticate_revoke_and_issue_again(store: Store, db_path: Path) -> None:
    tokens = IngestTokenStore(store)
    token = await tokens.create("collector-eu", now_ms=1000)
    assert token.startswith(INGEST_TOKEN_PREFIX) and len(token) > 40
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name, token_hash, created_at FROM ingest_tokens").fetchall()
        dump = "\n".join(conn.iterdump())
    assert rows == [("collector-eu", hash_token(token), 1000)]
    assert token not in dump
    record = await tokens.authenticate(token)
    assert record is not None and record.name == "collector-eu" and record.active
    assert (await tokens.list())[0].last_used_at is not None  # noted on use
    for wrong in (None, "", token + "x", "oma_" + token[4:], "omi_" + "a" * 200):
        assert await tokens.authenticate(wrong) is None
    with pytest.raises(ConflictError):
        await tokens.create("collector-eu")
    with pytest.raises(ValidationError):
        await tokens.create("bad name")
    revoked = await tokens.revoke("collector-eu", now_ms=2000)
    assert revoked.revoked_at == 2000 and not revoked.active
    assert (await tokens.revoke("collector-eu", now_ms=3000)).revoked_at == 2000  # idempotent
    assert await tokens.authenticate(token) is None
    with pytest.raises(NotFoundError):
        await tokens.revoke("nobody")
    again = await tokens.create("collector-eu")
    assert again != token and await tokens.authenticate(again) is not None
    assert await tokens.authenticate(token) is None
    assert [t.to_api()["status"] for t in await tokens.list()] == ["active"]
