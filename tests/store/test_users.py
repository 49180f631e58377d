"""Users, API tokens and sessions against a real SQLite file; the `users` migration branch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import create_engine

from openmanager.core.errors import ConflictError, NotFoundError, ValidationError
from openmanager.store import Store
from openmanager.store.db import alembic_config
from openmanager.store.models import Base
from openmanager.store.users import TOKEN_PREFIX, UserExistsError, UserStore, hash_secret

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # tests only: argon2id, cheap
PASSWORD = "correct horse battery"


@pytest.fixture
def users(store: Store) -> UserStore:
    return UserStore(store, hasher=FAST)


async def test_create_get_list_update_delete(users: UserStore) -> None:
    bob = await users.create("Bob", "viewer", PASSWORD, now_ms=1000)
    assert (bob.name, bob.role, bob.disabled, bob.has_password, bob.created_at) == ("bob", "viewer", False, True, 1000)
    assert PASSWORD not in str(bob.to_api()) and "$argon2" not in str(bob.to_api()) and set(bob.to_api()) == {
        "name", "role", "created_at", "updated_at", "disabled", "has_password"}
    await users.create("svc-ci", "operator")  # no password: tokens only
    with pytest.raises(UserExistsError):
        await users.create("BOB", "admin", PASSWORD)
    with pytest.raises(ValidationError) as exc:
        await users.create("carol", "viewer", "short")
    assert exc.value.code == "weak_password"
    with pytest.raises(ValidationError):
        await users.create("carol", "root", PASSWORD)
    assert [u.name for u in await users.list()] == ["bob", "svc-ci"]
    assert (await users.get("svc-ci")).has_password is False  # type: ignore[union-attr]
    assert await users.get("nobody") is None and await users.get("not a name") is None

    changed = await users.update("bob", role="operator", now_ms=2000)
    assert (changed.role, changed.updated_at) == ("operator", 2000)
    with pytest.raises(NotFoundError):
        await users.update("nobody", role="viewer")
    await users.delete("bob")
    assert await users.get("bob") is None
    with pytest.raises(NotFoundError):
        await users.delete("bob")


async def test_passwords_are_argon2_hashed_and_verified(users: UserStore, db_path: Path) -> None:
    await users.create("bob", "viewer", PASSWORD)
    stored = sqlite3.connect(db_path).execute("SELECT password_hash FROM users WHERE name='bob'").fetchone()[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert (await users.verify_password("BOB", PASSWORD)).name == "bob"  # type: ignore[union-attr]
    assert await users.verify_password("bob", PASSWORD + "!") is None
    assert await users.verify_password("nobody", PASSWORD) is None
    assert await users.verify_password("not a name!", PASSWORD) is None
    await users.create("svc", "viewer")
    assert await users.verify_password("svc", "") is None  # no password set: no password works
    await users.update("bob", disabled=True)
    assert await users.verify_password("bob", PASSWORD) is None
    await users.update("bob", disabled=False, password="another fine password")
    assert await users.verify_password("bob", PASSWORD) is None
    assert await users.verify_password("bob", "another fine password") is not None


async def test_a_hash_with_old_parameters_is_upgraded_on_login(store: Store, db_path: Path) -> None:
    await UserStore(store, hasher=FAST).create("bob", "viewer", PASSWORD)
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    assert await UserStore(store, hasher=stronger).verify_password("bob", PASSWORD) is not None
    stored = sqlite3.connect(db_path).execute("SELECT password_hash FROM users WHERE name='bob'").fetchone()[0]
    assert not stronger.check_needs_rehash(stored)


async def test_tokens_are_stored_hashed_resolve_to_their_user_and_revoke_per_user(
    users: UserStore, db_path: Path
) -> None:
    await users.create("alice", "operator", PASSWORD)
    await users.create("bob", "viewer", PASSWORD)
    rec, token = await users.create_token("alice", "laptop", now_ms=5)
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    assert (rec.user, rec.name, rec.created_at, rec.last_used_at) == ("alice", "laptop", 5, None)
    rows = sqlite3.connect(db_path).execute("SELECT token_hash FROM api_tokens").fetchall()
    assert rows == [(hash_secret(token),)]
    found = await users.resolve_token(token)
    assert found is not None and (found.user, found.role, found.token_id) == ("alice", "operator", rec.id)
    assert await users.resolve_token(token + "x") is None
    assert await users.resolve_token("oma_" + token[4:]) is None  # not a user token
    assert await users.resolve_token(None) is None

    bob_rec, bob_token = await users.create_token("bob", "ci")
    assert [t.id for t in await users.list_tokens("alice")] == [rec.id]
    with pytest.raises(NotFoundError):
        await users.revoke_token("alice", bob_rec.id)  # someone else's token: not found
    assert await users.resolve_token(bob_token) is not None
    revoked = await users.revoke_token("alice", rec.id, now_ms=9)
    assert revoked.revoked_at == 9
    assert await users.resolve_token(token) is None
    assert await users.list_tokens("alice") == []
    assert [t.id for t in await users.list_tokens("alice", include_revoked=True)] == [rec.id]
    with pytest.raises(NotFoundError):
        await users.revoke_token("alice", rec.id)  # already revoked

    await users.update("bob", disabled=True)
    assert await users.resolve_token(bob_token) is None
    await users.update("bob", disabled=False)
    assert await users.resolve_token(bob_token) is not None
    await users.touch_tokens({bob_rec.id: 1234})
    await users.touch_tokens({bob_rec.id: 1000})  # never backwards
    assert (await users.list_tokens("bob"))[0].last_used_at == 1234
    with pytest.raises(NotFoundError):
        await users.create_token("nobody", "x")
    with pytest.raises(ValidationError):
        await users.create_token("bob", "")


async def test_active_tokens_per_user_are_bounded(users: UserStore) -> None:
    from openmanager.store.users import MAX_TOKENS_PER_USER

    await users.create("bob", "viewer")
    for i in range(MAX_TOKENS_PER_USER):
        await users.create_token("bob", f"t{i}")
    with pytest.raises(ConflictError):
        await users.create_token("bob", "one too many")


async def test_sessions_expire_end_and_follow_the_user(users: UserStore, db_path: Path) -> None:
    await users.create("bob", "viewer", PASSWORD)
    sid, expires = await users.create_session("bob", 60_000, now_ms=1_000)
    assert expires == 61_000
    rows = sqlite3.connect(db_path).execute("SELECT id_hash FROM sessions").fetchall()
    assert rows == [(hash_secret(sid),)]
    found = await users.resolve_session(sid, now_ms=2_000)
    assert found is not None and (found.user, found.role, found.expires_at) == ("bob", "viewer", 61_000)
    assert found.session_hash == hash_secret(sid)
    assert await users.resolve_session(sid, now_ms=61_000) is None  # expired
    assert await users.resolve_session(sid + "x", now_ms=2_000) is None
    await users.create_session("bob", 60_000, now_ms=100_000)  # deletes the expired one on the way
    assert len(sqlite3.connect(db_path).execute("SELECT * FROM sessions").fetchall()) == 1

    sid2, _ = await users.create_session("bob", 60_000)
    await users.update("bob", role="operator")
    assert (await users.resolve_session(sid2)).role == "operator"  # type: ignore[union-attr]
    await users.update("bob", password="a brand new password")  # ends every session of the user
    assert await users.resolve_session(sid2) is None
    sid3, _ = await users.create_session("bob", 60_000)
    await users.delete_session(sid3)
    assert await users.resolve_session(sid3) is None
    keep, _ = await users.create_session("bob", 60_000)
    other, _ = await users.create_session("bob", 60_000)
    await users.delete_sessions("bob", keep_hash=hash_secret(keep))
    assert await users.resolve_session(keep) is not None and await users.resolve_session(other) is None
    await users.delete("bob")
    assert await users.resolve_session(keep) is None


async def test_ensure_makes_the_builtin_admin_exist_as_admin(users: UserStore) -> None:
    first = await users.ensure("admin", "admin", now_ms=1)
    assert (first.name, first.role, first.disabled, first.has_password) == ("admin", "admin", False, False)
    await users.update("admin", password=PASSWORD, role="viewer", disabled=True)
    again = await users.ensure("admin", "admin")
    assert (again.role, again.disabled, again.has_password, again.created_at) == ("admin", False, True, 1)


def test_users_migration_matches_the_tables_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    command.upgrade(alembic_config(url), "heads")
    engine = create_engine(url)
    mine = {"users", "api_tokens", "sessions"}
    try:
        with engine.connect() as conn:
            only = {"include_object": lambda _o, name, kind, _r, _c: kind != "table" or name in mine}
            assert compare_metadata(MigrationContext.configure(conn, opts=only), Base.metadata) == []
            heads = {r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
            assert "0006_users" in heads
        command.downgrade(alembic_config(url), "users@0001")
        with engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
            assert not names & mine and {"servers", "rollups"} <= names
    finally:
        engine.dispose()
