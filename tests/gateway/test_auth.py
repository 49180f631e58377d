"""The Authenticator over a real SQLite user store: what it resolves, what it caches, what it invalidates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from openmanager.core.errors import ConfigError, ForbiddenError
from openmanager.gateway.auth import (
    ADMIN_PRINCIPAL,
    Authenticator,
    Principal,
    cookie_name,
    require_role,
    startup_lines,
)
from openmanager.pipeline.session import Session
from openmanager.pipeline.stats import HubStats
from openmanager.store import Store
from openmanager.store.users import UserStore

ADMIN = "unit-test-admin-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[UserStore]:
    store = await Store.open(f"sqlite:///{tmp_path / 'om.db'}")
    try:
        yield UserStore(store, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    finally:
        await store.close()


async def test_the_admin_token_is_the_builtin_admin_even_without_a_store() -> None:
    auth = Authenticator(ADMIN)
    assert await auth.resolve_token(ADMIN) == ADMIN_PRINCIPAL
    assert ADMIN_PRINCIPAL.to_api() == {"user": "admin", "role": "admin", "via": "admin_token"}
    assert await auth.resolve_token(ADMIN + "x") is None and await auth.resolve_token("omu_whatever") is None
    assert auth.check_token(ADMIN) == "admin"
    with pytest.raises(ConfigError, match="at least 8 characters"):
        Authenticator("short")


async def test_attach_creates_the_admin_row(users: UserStore) -> None:
    auth = Authenticator(ADMIN)
    await auth.attach(users)
    admin = await users.get("admin")
    assert admin is not None and admin.role == "admin"


async def test_lookups_are_cached_shared_and_invalidated(users: UserStore) -> None:
    clock = Clock()
    auth = Authenticator(ADMIN, clock=clock)
    await auth.attach(users)
    await users.create("bob", "viewer")
    rec, token = await users.create_token("bob", "t")

    got = await asyncio.gather(*(auth.resolve_token(token) for _ in range(50)))  # a reconnect storm
    assert {p.user if p else None for p in got} == {"bob"} and auth.lookups == 1
    for _ in range(100):
        assert await auth.resolve_token(token) is not None
    assert auth.lookups == 1
    await auth.resolve_token(ADMIN)
    assert auth.lookups == 1  # the admin token never needs the store

    clock.now += 31  # entries expire, so changes made elsewhere (the CLI) are seen within 30 s
    await auth.resolve_token(token)
    assert auth.lookups == 2

    # a bad token is remembered as bad for a short while (a flood of it does not query each time)
    for _ in range(20):
        assert await auth.resolve_token("omu_not-a-token") is None
    assert auth.lookups == 3

    await users.revoke_token("bob", rec.id)
    auth.invalidate(lambda p: p.token_id == rec.id)
    assert await auth.resolve_token(token) is None


async def test_sessions_resolve_by_cookie_and_logout_forgets_them(users: UserStore) -> None:
    auth = Authenticator(ADMIN)
    await auth.attach(users)
    await users.create("bob", "operator")
    sid, expires = await auth.open_session(Principal("bob", "operator", "session"))
    cookies = {cookie_name(8000): sid}
    found = await auth.authenticate({}, {}, cookies, 8000)
    assert found is not None and (found.user, found.role, found.via, found.expires_at) == (
        "bob", "operator", "session", expires)
    assert await auth.authenticate({}, {}, cookies, 8001) is None  # another hub's cookie name
    # a Bearer header wins over the cookie, and `?token=` when given
    assert await auth.authenticate({"authorization": "Bearer nope"}, {}, cookies, 8000) is None
    assert (await auth.authenticate({}, {"token": ADMIN}, cookies, 8000)) == ADMIN_PRINCIPAL
    await auth.logout(sid)
    assert await auth.authenticate({}, {}, cookies, 8000) is None


async def test_invalidation_closes_the_streams_of_that_credential_only(users: UserStore) -> None:
    auth = Authenticator(ADMIN)
    await auth.attach(users)
    await users.create("bob", "viewer")
    stats = HubStats()
    by_token, by_session, other = (Session(user="bob", transport="ws", remote="", stats=stats) for _ in range(3))
    auth.bind(by_token, Principal("bob", "viewer", "token", token_id="t1"))
    auth.bind(by_session, Principal("bob", "viewer", "session", session_hash="h1"))
    auth.bind(other, Principal("carol", "viewer", "session", session_hash="h2"))
    auth.invalidate(lambda p: p.token_id == "t1")
    assert (by_token.close_code, by_session.close_code, other.close_code) == (4401, None, None)
    auth.invalidate_user("bob", close_streams=False)  # a role change: streams stay
    assert by_session.close_code is None
    auth.invalidate_user("bob", sessions_only=True)  # a new password
    assert by_session.close_code == 4401 and other.close_code is None
    auth.unbind(other)
    auth.invalidate_user("carol")
    assert other.close_code is None  # no longer tracked


def test_require_role_reads_the_scope() -> None:
    assert require_role({"user": "bob", "role": "operator"}, "viewer") == "bob"
    assert require_role({"user": "bob", "role": "operator"}, "operator") == "bob"
    with pytest.raises(ForbiddenError) as exc:
        require_role({"user": "bob", "role": "operator"}, "admin")
    assert exc.value.code == "forbidden" and "admin" in exc.value.message
    with pytest.raises(ForbiddenError):
        require_role({}, "viewer")


def test_the_start_up_lines_show_the_token_only_to_a_terminal() -> None:
    base, token = "http://127.0.0.1:8000", "s3cr3t-admin-token"
    shown = startup_lines(base, token, "data/admin_token", interactive=True)
    assert shown == [f"Dashboard: {base}/?token={token}", "Admin token from data/admin_token"]
    for origin, where in (("data/admin_token", "Admin token in data/admin_token"),
                          ("environment", "Admin token in OPENMANAGER_ADMIN_TOKEN (environment)")):
        hidden = startup_lines(base, token, origin, interactive=False)
        assert hidden[0].startswith(f"Dashboard: {base}/ ") and hidden[1] == where
        assert token not in "\n".join(hidden)
