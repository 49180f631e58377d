"""Users in the store: accounts with a role and an argon2 password hash, per-user API tokens, login sessions.

Tables from migration `0006_users` (branch `users`). A user's `name` is its stable id everywhere (the
notifications, preferences and `created_by` fields of other tables hold it). API tokens (`omu_` + 32
random bytes) and session ids (32 random bytes) are high-entropy secrets, so the store keeps only their
SHA-256: nothing to brute-force, and a stolen database holds no usable credential. Their plain value is
returned once, at creation. Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's
low-memory profile) in a worker thread, at most two at a time (each needs 64 MiB).

Timestamps are epoch milliseconds. Database errors come out as `StoreError` (from `Store`).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    String,
    Table,
    UniqueConstraint,
    delete,
    false,
    select,
    update,
)

from openmanager.core.access import normalize_user_name, validate_password, validate_role
from openmanager.core.errors import ConflictError, NotFoundError, ValidationError
from openmanager.store.db import Store
from openmanager.store.models import Base

__all__ = [
    "MAX_TOKENS_PER_USER",
    "TOKEN_PREFIX",
    "Identity",
    "TokenRecord",
    "UserRecord",
    "UserStore",
    "hash_secret",
    "users_table",
]

TOKEN_PREFIX = "omu_"  # recognisable in a leaked-secrets scan (agents' tokens are `oma_`)
MAX_TOKENS_PER_USER = 100
MAX_TOKEN_NAME = 100
HASH_CONCURRENCY = 2

users_table = Table(
    "users",
    Base.metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=True),
    Column("created_at", BigInteger(), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
    Column("disabled", Boolean(), nullable=False, server_default=false()),
)
tokens_table = Table(
    "api_tokens",
    Base.metadata,
    Column("id", String(32), primary_key=True),
    Column("user", String(64), nullable=False),
    Column("name", String(MAX_TOKEN_NAME), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    Column("last_used_at", BigInteger(), nullable=True),
    Column("revoked_at", BigInteger(), nullable=True),
    UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
    Index("ix_api_tokens_user", "user"),
)
sessions_table = Table(
    "sessions",
    Base.metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user", String(64), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    Column("expires_at", BigInteger(), nullable=False),
    Index("ix_sessions_user", "user"),
    Index("ix_sessions_expires", "expires_at"),
)


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a token or session id: what the store keeps instead of it."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class UserExistsError(ConflictError):
    """A user of that name exists already."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    role: str
    created_at: int
    updated_at: int
    disabled: bool
    has_password: bool

    def to_api(self) -> dict[str, Any]:
        """The wire form; never includes the hash."""
        return {"name": self.name, "role": self.role, "created_at": self.created_at,
                "updated_at": self.updated_at, "disabled": self.disabled, "has_password": self.has_password}


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    user: str
    name: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None

    def to_api(self) -> dict[str, Any]:
        """The wire form; never includes the token or its hash."""
        return {"id": self.id, "name": self.name, "created_at": self.created_at,
                "last_used_at": self.last_used_at, "revoked_at": self.revoked_at}


@dataclass(frozen=True, slots=True)
class Identity:
    """What a token or session id resolves to: the (enabled) user, its role, and which credential it was."""

    user: str
    role: str
    token_id: str | None = None  # API tokens
    session_hash: str | None = None  # login sessions
    expires_at: int | None = None  # login sessions


_USER_COLUMNS = (
    users_table.c.name,
    users_table.c.role,
    users_table.c.created_at,
    users_table.c.updated_at,
    users_table.c.disabled,
    users_table.c.password_hash,
)
_TOKEN_COLUMNS = (
    tokens_table.c.id,
    tokens_table.c.user,
    tokens_table.c.name,
    tokens_table.c.created_at,
    tokens_table.c.last_used_at,
    tokens_table.c.revoked_at,
)


def _user(row: Sequence[Any]) -> UserRecord:
    return UserRecord(name=str(row[0]), role=str(row[1]), created_at=int(row[2]), updated_at=int(row[3]),
                      disabled=bool(row[4]), has_password=row[5] is not None)


def _token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(id=str(row[0]), user=str(row[1]), name=str(row[2]), created_at=int(row[3]),
                       last_used_at=None if row[4] is None else int(row[4]),
                       revoked_at=None if row[5] is None else int(row[5]))


def validate_token_name(name: object) -> str:
    """A token's label: 1-100 printable characters."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_TOKEN_NAME or not name.isprintable():
        raise ValidationError(f"a token name is 1-{MAX_TOKEN_NAME} printable characters", code="invalid_name")
    return name.strip()


class UserStore:
    """Users, API tokens and sessions over a `Store` (its engine, its write serialisation)."""

    def __init__(self, store: Store, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.hasher = hasher or PasswordHasher()
        self._hashing = asyncio.Semaphore(HASH_CONCURRENCY)
        self._dummy_hash: str | None = None

    # -- passwords (argon2 in a worker thread, bounded) --------------------------------------------

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        async with self._hashing:
            try:
                return await asyncio.to_thread(self.hasher.verify, stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    async def _burn(self, password: str) -> None:
        """Verify against a throwaway hash, so an unknown account costs what a known one does."""
        if self._dummy_hash is None:
            self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
        await self._verify(self._dummy_hash, password)

    # -- users ----------------------------------------------------------------------------------

    async def create(self, name: str, role: str, password: str | None = None, *, now_ms: int | None = None
                     ) -> UserRecord:
        """Create a user. Without a password it can only use API tokens. Raises ValidationError (bad name,
        role or password) or UserExistsError."""
        name = normalize_user_name(name)
        validate_role(role)
        digest = await self._hash(validate_password(password)) if password is not None else None
        now = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            exists = (await conn.execute(select(users_table.c.name).where(users_table.c.name == name))).first()
            if exists is not None:
                raise UserExistsError(f"a user named {name!r} exists")
            await conn.execute(users_table.insert().values(name=name, role=role, password_hash=digest,
                                                           created_at=now, updated_at=now, disabled=False))
        return UserRecord(name, role, now, now, False, digest is not None)

    async def ensure(self, name: str, role: str, *, now_ms: int | None = None) -> UserRecord:
        """Make sure `name` exists, enabled, with `role` (the built-in admin); other fields are kept."""
        name = normalize_user_name(name)
        validate_role(role)
        now = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            row = (await conn.execute(select(*_USER_COLUMNS).where(users_table.c.name == name))).first()
            if row is None:
                await conn.execute(users_table.insert().values(name=name, role=role, password_hash=None,
                                                               created_at=now, updated_at=now, disabled=False))
            elif row.role != role or row.disabled:
                await conn.execute(update(users_table).where(users_table.c.name == name)
                                   .values(role=role, disabled=False, updated_at=now))
            row = (await conn.execute(select(*_USER_COLUMNS).where(users_table.c.name == name))).one()
        return _user(row)

    async def get(self, name: str) -> UserRecord | None:
        try:
            name = normalize_user_name(name)
        except ValidationError:
            return None
        async with self.store._read() as conn:
            row = (await conn.execute(select(*_USER_COLUMNS).where(users_table.c.name == name))).first()
        return None if row is None else _user(row)

    async def list(self) -> list[UserRecord]:
        """Every user by name. Never includes password hashes."""
        async with self.store._read() as conn:
            return [_user(r) for r in await conn.execute(select(*_USER_COLUMNS).order_by(users_table.c.name))]

    async def update(self, name: str, *, role: str | None = None, disabled: bool | None = None,
                     password: str | None = None, now_ms: int | None = None) -> UserRecord:
        """Change a user's role, disabled flag or password. A new password or disabling ends every login
        session of the user (its API tokens stay, refused while it is disabled). Raises NotFoundError or
        ValidationError."""
        name = normalize_user_name(name)
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = validate_role(role)
        if disabled is not None:
            values["disabled"] = bool(disabled)
        if password is not None:
            values["password_hash"] = await self._hash(validate_password(password))
        values["updated_at"] = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            result = await conn.execute(update(users_table).where(users_table.c.name == name).values(**values))
            if result.rowcount == 0:
                raise NotFoundError(f"no user {name!r}")
            if password is not None or disabled:
                await conn.execute(delete(sessions_table).where(sessions_table.c.user == name))
            row = (await conn.execute(select(*_USER_COLUMNS).where(users_table.c.name == name))).one()
        return _user(row)

    async def delete(self, name: str) -> None:
        """Delete a user with its API tokens and sessions. Raises NotFoundError."""
        name = normalize_user_name(name)
        async with self.store._write() as conn:
            result = await conn.execute(delete(users_table).where(users_table.c.name == name))
            if result.rowcount == 0:
                raise NotFoundError(f"no user {name!r}")
            await conn.execute(delete(tokens_table).where(tokens_table.c.user == name))
            await conn.execute(delete(sessions_table).where(sessions_table.c.user == name))

    async def verify_password(self, name: str, password: str) -> UserRecord | None:
        """The user, when `password` is theirs and the account is enabled; else None, in about the same time
        whether or not the account exists (an argon2 verification either way). A hash made with older
        parameters is upgraded on success."""
        try:
            name = normalize_user_name(name)
        except ValidationError:
            name = ""
        row = None
        if name and isinstance(password, str) and len(password) <= 1024:
            async with self.store._read() as conn:
                row = (await conn.execute(select(*_USER_COLUMNS).where(users_table.c.name == name))).first()
        if row is None or row.password_hash is None or row.disabled:
            await self._burn(password if isinstance(password, str) else "")
            return None
        stored = str(row.password_hash)
        if not await self._verify(stored, password):
            return None
        if self.hasher.check_needs_rehash(stored):
            rehashed = await self._hash(password)
            async with self.store._write() as conn:
                await conn.execute(update(users_table).where(users_table.c.name == name,
                                                             users_table.c.password_hash == stored)
                                   .values(password_hash=rehashed))
        return _user(row)

    # -- API tokens -----------------------------------------------------------------------------

    async def create_token(self, user: str, name: str, *, now_ms: int | None = None) -> tuple[TokenRecord, str]:
        """A new API token for `user`: its record and the token itself, which is not stored (show it once).
        Raises NotFoundError (no such user), ValidationError (bad name) or ConflictError (at most 100
        active tokens per user)."""
        user = normalize_user_name(user)
        label = validate_token_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(8)
        now = _now_ms() if now_ms is None else now_ms
        async with self.store._write() as conn:
            if (await conn.execute(select(users_table.c.name).where(users_table.c.name == user))).first() is None:
                raise NotFoundError(f"no user {user!r}")
            active = (await conn.execute(select(tokens_table.c.id).where(
                tokens_table.c.user == user, tokens_table.c.revoked_at.is_(None)))).all()
            if len(active) >= MAX_TOKENS_PER_USER:
                raise ConflictError(f"a user has at most {MAX_TOKENS_PER_USER} active tokens; revoke one first")
            await conn.execute(tokens_table.insert().values(id=token_id, user=user, name=label,
                                                            token_hash=hash_secret(token), created_at=now))
        return TokenRecord(token_id, user, label, now, None, None), token

    async def list_tokens(self, user: str, *, include_revoked: bool = False) -> builtins.list[TokenRecord]:
        """A user's tokens, oldest first (active ones only unless asked)."""
        query = select(*_TOKEN_COLUMNS).where(tokens_table.c.user == user)
        if not include_revoked:
            query = query.where(tokens_table.c.revoked_at.is_(None))
        async with self.store._read() as conn:
            return [_token(r) for r in await conn.execute(query.order_by(tokens_table.c.created_at,
                                                                         tokens_table.c.id))]

    async def revoke_token(self, user: str, token_id: str, *, now_ms: int | None = None) -> TokenRecord:
        """Revoke one of `user`'s active tokens. Raises NotFoundError when `user` has no such active token
        (someone else's token is not found either)."""
        now = _now_ms() if now_ms is None else now_ms
        where = (tokens_table.c.id == token_id, tokens_table.c.user == user, tokens_table.c.revoked_at.is_(None))
        async with self.store._write() as conn:
            result = await conn.execute(update(tokens_table).where(*where).values(revoked_at=now))
            if result.rowcount == 0:
                raise NotFoundError(f"no token {token_id!r}")
            row = (await conn.execute(select(*_TOKEN_COLUMNS).where(tokens_table.c.id == token_id))).one()
        return _token(row)

    async def resolve_token(self, token: str | None) -> Identity | None:
        """The enabled user an active API token belongs to, or None."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_secret(token)
        query = (
            select(tokens_table.c.id, tokens_table.c.token_hash, users_table.c.name, users_table.c.role)
            .join(users_table, users_table.c.name == tokens_table.c.user)
            .where(tokens_table.c.token_hash == digest, tokens_table.c.revoked_at.is_(None),
                   users_table.c.disabled.is_(False))
        )
        async with self.store._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None or not hmac.compare_digest(str(row.token_hash), digest):
            return None
        return Identity(user=str(row.name), role=str(row.role), token_id=str(row.id))

    async def touch_tokens(self, used: Mapping[str, int]) -> None:
        """Record `{token id: last used ms}` in one transaction (last_used_at never moves backwards)."""
        if not used:
            return
        async with self.store._write() as conn:
            for token_id, ms in used.items():
                await conn.execute(update(tokens_table).where(
                    tokens_table.c.id == token_id,
                    (tokens_table.c.last_used_at.is_(None)) | (tokens_table.c.last_used_at < ms),
                ).values(last_used_at=ms))

    # -- login sessions ---------------------------------------------------------------------------

    async def create_session(self, user: str, ttl_ms: int, *, now_ms: int | None = None) -> tuple[str, int]:
        """A new login session for `user`: `(session id, expires_at)`. The id is not stored, only its hash.
        Expired sessions of every user are deleted on the way."""
        session_id = secrets.token_urlsafe(32)
        now = _now_ms() if now_ms is None else now_ms
        expires = now + ttl_ms
        async with self.store._write() as conn:
            await conn.execute(delete(sessions_table).where(sessions_table.c.expires_at <= now))
            await conn.execute(sessions_table.insert().values(id_hash=hash_secret(session_id), user=user,
                                                              created_at=now, expires_at=expires))
        return session_id, expires

    async def resolve_session(self, session_id: str | None, *, now_ms: int | None = None) -> Identity | None:
        """The enabled user of an unexpired session, or None."""
        if not session_id or len(session_id) > 200:
            return None
        digest = hash_secret(session_id)
        now = _now_ms() if now_ms is None else now_ms
        query = (
            select(sessions_table.c.id_hash, sessions_table.c.expires_at, users_table.c.name, users_table.c.role)
            .join(users_table, users_table.c.name == sessions_table.c.user)
            .where(sessions_table.c.id_hash == digest, sessions_table.c.expires_at > now,
                   users_table.c.disabled.is_(False))
        )
        async with self.store._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None or not hmac.compare_digest(str(row.id_hash), digest):
            return None
        return Identity(user=str(row.name), role=str(row.role), session_hash=digest, expires_at=int(row.expires_at))

    async def delete_session(self, session_id: str) -> None:
        """End one session (unknown ids are ignored)."""
        async with self.store._write() as conn:
            await conn.execute(delete(sessions_table).where(sessions_table.c.id_hash == hash_secret(session_id)))

    async def delete_sessions(self, user: str, *, keep_hash: str | None = None) -> None:
        """End every session of `user`, except the one whose hash is `keep_hash`."""
        query = delete(sessions_table).where(sessions_table.c.user == user)
        if keep_hash is not None:
            query = query.where(sessions_table.c.id_hash != keep_hash)
        async with self.store._write() as conn:
            await conn.execute(query)
