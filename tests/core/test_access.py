"""Roles, user names, passwords and the login limiter: pure, driven with explicit times."""

from __future__ import annotations

import pytest

from openmanager.core.access import (
    ROLES,
    LimitPolicy,
    LoginLimiter,
    has_role,
    normalize_user_name,
    validate_password,
    validate_role,
)
from openmanager.core.errors import ValidationError

MIN = 60_000


def test_roles_are_ordered_admin_over_operator_over_viewer() -> None:
    assert ROLES == ("viewer", "operator", "admin")
    grants = {(have, need) for have in ROLES for need in ROLES if has_role(have, need)}
    assert grants == {("viewer", "viewer"), ("operator", "viewer"), ("operator", "operator"),
                      ("admin", "viewer"), ("admin", "operator"), ("admin", "admin")}
    assert not has_role("root", "viewer") and not has_role("", "viewer")
    with pytest.raises(ValueError):
        has_role("admin", "superuser")
    assert validate_role("operator") == "operator"
    for bad in ("Admin", "", None, 3):
        with pytest.raises(ValidationError) as exc:
            validate_role(bad)
        assert exc.value.code == "invalid_role"


def test_user_names_are_normalised_to_lower_case_and_bounded() -> None:
    assert normalize_user_name("  Alice@Example.com ") == "alice@example.com"
    assert normalize_user_name("ops_team-2") == "ops_team-2"
    for bad in ("", "-bob", ".x", "a b", "a/b", "x" * 65, None, 7, "é"):
        with pytest.raises(ValidationError) as exc:
            normalize_user_name(bad)
        assert exc.value.code == "invalid_name"


def test_passwords_need_ten_characters_and_at_most_1024() -> None:
    assert validate_password("0123456789") == "0123456789"
    for bad in ("short", "123456789", None, b"0123456789ab"):
        with pytest.raises(ValidationError) as exc:
            validate_password(bad)
        assert exc.value.code == "weak_password"
    with pytest.raises(ValidationError):
        validate_password("x" * 1025)


def test_five_failures_lock_the_address_for_every_account_until_the_window_moves() -> None:
    limiter = LoginLimiter()
    for i in range(5):
        assert limiter.retry_after_ms("bob", "10.0.0.1", i * 1000) == 0
        limiter.failed("bob", "10.0.0.1", i * 1000)
    assert limiter.retry_after_ms("bob", "10.0.0.1", 5000) == 5 * MIN - 5000
    # another account from the same address: refused too (the address is at its limit)
    assert limiter.retry_after_ms("carol", "10.0.0.1", 5000) == 5 * MIN - 5000
    # the oldest failure leaves the window: one more try
    assert limiter.retry_after_ms("carol", "10.0.0.1", 5 * MIN) == 0
    assert limiter.retry_after_ms("carol", "10.0.0.1", 5 * MIN + 1000) == 0


def test_an_account_is_limited_from_any_address_and_a_success_clears_only_the_account() -> None:
    limiter = LoginLimiter()
    for i in range(5):
        limiter.failed("Bob", f"10.0.0.{i}", 0)  # five different addresses
    assert limiter.retry_after_ms("bob", "10.9.9.9", 1) > 0  # names are counted case-insensitively
    assert limiter.retry_after_ms("carol", "10.9.9.9", 1) == 0
    limiter.succeeded("bob")
    assert limiter.retry_after_ms("bob", "10.9.9.9", 1) == 0
    for _ in range(4):
        limiter.failed("dave", "10.0.0.7", 0)
    limiter.failed("erin", "10.0.0.7", 0)
    limiter.succeeded("erin")
    assert limiter.retry_after_ms("frank", "10.0.0.7", 1) > 0  # the address keeps its count


def test_token_logins_count_against_the_address_only() -> None:
    limiter = LoginLimiter()
    for _ in range(5):
        limiter.failed(None, "10.0.0.1", 0)
    assert limiter.retry_after_ms(None, "10.0.0.1", 1) > 0
    assert limiter.retry_after_ms("bob", "10.0.0.2", 1) == 0


def test_memory_is_bounded() -> None:
    limiter = LoginLimiter(LimitPolicy(max_failures=3, window_ms=MIN, max_keys=100))
    for i in range(10_000):
        limiter.failed(f"user{i}", f"addr{i}", i)
    assert len(limiter._accounts) == 100 and len(limiter._addresses) == 100
    for _ in range(50):
        limiter.failed("x", "y", 0)
    assert len(limiter._accounts["x"]) == 3
    limiter.failed("a" * 10_000, "z", 0)
    assert max(len(k) for k in limiter._accounts) <= 80
