"""Named bearer tokens stored hashed: what agent tokens (`store.agents`) and ingest tokens
(`store.ingest_tokens`) share.

A token is a recognisable prefix and 32 random bytes; the store keeps only its SHA-256 (nothing to
brute-force, so a plain hash is enough), in a table with a unique `name`, the unique `token_hash`,
`created_at` and `revoked_at` (epoch ms; NULL while active), followed by the kind's own columns. A name
holds at most one active token; a revoked name may be issued a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, UniqueConstraint, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["find_active", "hash_token", "issue", "revoke", "token_table"]

_ID = BigInteger().with_variant(Integer(), "sqlite")


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_table(name: str, metadata: MetaData, *extra: Column[Any], name_unique: str, hash_unique: str) -> Table:
    """The table `name`: id, name, token_hash, created_at, revoked_at, then `extra`, with the two unique
    constraints named as the migrations name them."""
    return Table(
        name,
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("name", String(255), nullable=False),
        Column("token_hash", String(64), nullable=False),
        Column("created_at", BigInteger(), nullable=False),
        Column("revoked_at", BigInteger(), nullable=True),
        *extra,
        UniqueConstraint("name", name=name_unique),
        UniqueConstraint("token_hash", name=hash_unique),
    )


async def issue(conn: AsyncConnection, table: Table, name: str, prefix: str, now_ms: int, *,
                insert: Mapping[str, Any], reissue: Mapping[str, Any], exists: Callable[[], Exception]) -> str:
    """Issue a new token for `name` in `conn`'s transaction and return it (it is stored nowhere: show it
    once). A new name is inserted with `insert`'s extra values, a revoked one re-activated with `reissue`'s;
    raises `exists()` when `name` has an active token."""
    token = prefix + secrets.token_urlsafe(32)
    digest = hash_token(token)
    t = table.c
    row = (await conn.execute(select(t.id, t.revoked_at).where(t.name == name))).first()
    if row is None:
        await conn.execute(table.insert().values(name=name, token_hash=digest, created_at=now_ms, **insert))
    elif row.revoked_at is not None:
        await conn.execute(update(table).where(t.id == row.id).values(
            token_hash=digest, created_at=now_ms, revoked_at=None, **reissue))
    else:
        raise exists()
    return token


async def find_active(conn: AsyncConnection, table: Table, columns: tuple[Any, ...],
                      token: str) -> Sequence[Any] | None:
    """The row of the active token `token` is, starting with `columns`, or None (unknown or revoked)."""
    digest = hash_token(token)
    query = select(*columns, table.c.token_hash, table.c.revoked_at).where(table.c.token_hash == digest)
    row = (await conn.execute(query)).first()
    if row is None or not hmac.compare_digest(str(row.token_hash), digest) or row.revoked_at is not None:
        return None
    return row


async def revoke(conn: AsyncConnection, table: Table, columns: tuple[Any, ...], name: str,
                 now_ms: int) -> Sequence[Any] | None:
    """Revoke `name`'s token in `conn`'s transaction (idempotent: the first `revoked_at` stays) and return
    its row of `columns`, or None for an unknown name."""
    t = table.c
    await conn.execute(update(table).where(t.name == name, t.revoked_at.is_(None)).values(revoked_at=now_ms))
    return (await conn.execute(select(*columns).where(t.name == name))).first()
