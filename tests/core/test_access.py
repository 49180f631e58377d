"""Roles, user names, passwords, the login limiter and the Host check: pure, driven with explicit times."""

from __future__ import annotations

import pytest

from openmanager.core.access import (
    ROLES,
    LimitPolicy,
    LoginAttempt,
    LoginLimiter,
    LoginRefused,
    allowed_hosts_policy,
    has_role,
    host_allowed,
    host_name,
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


def fail(limiter: LoginLimiter, account: str | None, address: str | None, now_ms: int) -> None:
    """One attempt that is admitted, runs its check and fails."""
    attempt = limiter.begin(account, address, now_ms)
    assert isinstance(attempt, LoginAttempt), attempt
    limiter.end(attempt, False)


def succeed(limiter: LoginLimiter, account: str | None, address: str | None, now_ms: int) -> None:
    attempt = limiter.begin(account, address, now_ms)
    assert isinstance(attempt, LoginAttempt), attempt
    limiter.end(attempt, True)


def test_five_failures_lock_the_address_for_every_account_until_the_window_moves() -> None:
    limiter = LoginLimiter()
    for i in range(5):
        assert limiter.retry_after_ms("bob", "10.0.0.1", i * 1000) == 0
        fail(limiter, "bob", "10.0.0.1", i * 1000)
    assert limiter.retry_after_ms("bob", "10.0.0.1", 5000) == 5 * MIN - 5000
    assert limiter.begin("bob", "10.0.0.1", 5000) == LoginRefused(5 * MIN - 5000)
    # another account from the same address: refused too (the address is at its limit)
    assert limiter.begin("carol", "10.0.0.1", 5000) == LoginRefused(5 * MIN - 5000)
    # the oldest failure leaves the window: one more try
    assert limiter.retry_after_ms("carol", "10.0.0.1", 5 * MIN) == 0
    fail(limiter, "carol", "10.0.0.1", 5 * MIN)
    assert limiter.retry_after_ms("carol", "10.0.0.1", 5 * MIN + 1) == 1000 - 1  # the next oldest, at 1 s


def test_an_account_is_limited_from_any_address_and_a_success_clears_only_the_account() -> None:
    limiter = LoginLimiter()
    for i in range(5):
        fail(limiter, "Bob", f"10.0.0.{i}", 0)  # five different addresses
    assert isinstance(limiter.begin("bob", "10.9.9.9", 1), LoginRefused)  # names are case-insensitive
    assert limiter.retry_after_ms("carol", "10.9.9.9", 1) == 0
    for _ in range(4):
        fail(limiter, "dave", "10.0.0.7", 0)
    succeed(limiter, "erin", "10.0.0.7", 0)  # erin's own attempt is given back to the address ...
    assert limiter.retry_after_ms("frank", "10.0.0.7", 1) == 0
    fail(limiter, "erin", "10.0.0.7", 1)
    assert limiter.retry_after_ms("frank", "10.0.0.7", 2) > 0  # ... dave's failures stay on it
    succeed(limiter, "zoe", "10.0.0.8", 0)
    for i in range(4):
        fail(limiter, "zoe", "10.0.0.8", i)
    succeed(limiter, "zoe", "10.0.0.9", 10)  # a success clears the account's count
    assert limiter.retry_after_ms("zoe", None, 11) == 0 and "zoe" not in limiter._accounts


def test_attempts_take_their_slot_before_the_check_so_a_burst_gets_at_most_five_checks() -> None:
    """200 concurrent guesses (all begun before any ends): at most 2 checks run for the account, at most 5
    attempts are admitted in the window, and the right password right after the burst is refused."""
    limiter = LoginLimiter()
    decisions = [limiter.begin("bob", "10.0.0.1", 1000 + i) for i in range(200)]
    checks = [d for d in decisions if isinstance(d, LoginAttempt)]
    refused = [d for d in decisions if isinstance(d, LoginRefused)]
    assert len(checks) == LimitPolicy().checks_per_account == 2
    assert len(refused) == 198 and all(r.retry_after_ms >= 1000 for r in refused)
    assert [r.busy for r in refused[:3]] == [True, True, False]  # the 5th slot filled the window
    assert all(r == LoginRefused(5 * MIN - i) for i, r in enumerate(refused[3:], start=5))  # the oldest: at 1000
    for attempt in checks:
        limiter.end(attempt, False)
    assert len(limiter._accounts["bob"]) == 5  # 2 checked and 3 turned away while busy: all counted
    late = limiter.begin("bob", "10.0.0.2", 2000)  # the right password, from elsewhere: never checked
    assert late == LoginRefused(1000 + 5 * MIN - 2000)
    assert limiter._account_checks == {} and limiter._address_checks == {}
    ok = limiter.begin("bob", "10.0.0.2", 1004 + 5 * MIN)  # the window has passed (the 5th slot at 1004)
    assert isinstance(ok, LoginAttempt)


def test_concurrent_checks_are_capped_per_account_and_per_address() -> None:
    limiter = LoginLimiter(LimitPolicy(max_failures=50, checks_per_account=1, checks_per_address=3))
    first = limiter.begin("ann", "10.0.0.1", 0)
    assert isinstance(first, LoginAttempt)
    busy = limiter.begin("ann", "10.0.0.2", 0)
    assert busy == LoginRefused(1000, busy=True)  # one check at a time for ann
    others = [limiter.begin(f"user{i}", "10.0.0.1", 0) for i in range(3)]
    assert [type(d) for d in others] == [LoginAttempt, LoginAttempt, LoginRefused]  # 3 from the address
    limiter.end(first, False)
    again = limiter.begin("ann", "10.0.0.3", 1)
    assert isinstance(again, LoginAttempt)  # ann's check ended: the next may run
    for decision in [*others, again]:
        if isinstance(decision, LoginAttempt):
            limiter.end(decision, False)
    assert limiter._account_checks == {} and limiter._address_checks == {}


def test_token_logins_count_against_the_address_only() -> None:
    limiter = LoginLimiter()
    for _ in range(5):
        fail(limiter, None, "10.0.0.1", 0)
    assert limiter.retry_after_ms(None, "10.0.0.1", 1) > 0
    assert limiter.retry_after_ms("bob", "10.0.0.2", 1) == 0
    assert limiter._accounts == {}


def test_memory_is_bounded() -> None:
    limiter = LoginLimiter(LimitPolicy(max_failures=3, window_ms=MIN, max_keys=100))
    for i in range(10_000):
        fail(limiter, f"user{i}", f"addr{i}", i)
    assert len(limiter._accounts) == 100 and len(limiter._addresses) == 100
    for _ in range(50):
        limiter.begin("x", "y", 0)  # refused from the 4th on, and not counted again
    assert len(limiter._accounts["x"]) == 3
    fail(limiter, "a" * 10_000, "z", 0)
    assert max(len(k) for k in limiter._accounts) <= 80
    assert len(limiter._account_checks) <= 1 and len(limiter._address_checks) <= 1  # only "x"'s open checks


def test_host_names_are_parsed_from_host_headers() -> None:
    assert host_name("Hub.Example.com.:8000") == "hub.example.com"
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("[::1]:8000") == "::1"
    for bad in ("", "a b", "x:y", "[::1", "[nope]:80", "a..b", "-a.com", "h:80:90"):
        assert host_name(bad) is None, bad


def test_only_allowed_and_loopback_hosts_are_served_when_the_check_is_on() -> None:
    loopback_only = allowed_hosts_policy("", "127.0.0.1")
    assert loopback_only == frozenset()
    for ok in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "app.localhost", "127.1.2.3", None):
        assert host_allowed(ok, loopback_only), ok
    for bad in ("evil.example:8000", "evil.example", "10.0.0.1:8000", "garbage host"):
        assert not host_allowed(bad, loopback_only), bad
    assert allowed_hosts_policy("", "0.0.0.0") is None  # bound to every address: off unless asked for
    assert allowed_hosts_policy("", "::") is None
    assert allowed_hosts_policy("*", "127.0.0.1") is None
    assert allowed_hosts_policy("", "localhost", "https://mon.example.org:8443/hub") == {"mon.example.org"}
    listed = allowed_hosts_policy("Hub.Example.com, *.corp.example, ::1, 10.0.0.5", "0.0.0.0")
    assert listed == {"hub.example.com", "*.corp.example", "::1", "10.0.0.5"}
    for ok in ("hub.example.com:443", "a.corp.example", "b.a.corp.example:80", "10.0.0.5", "localhost"):
        assert host_allowed(ok, listed), ok
    for bad in ("corp.example", "xcorp.example", "hub.example.com.evil", "10.0.0.6"):
        assert not host_allowed(bad, listed), bad
    for bad_setting in ("hub.example.com:80", "http://x", "a b", "*.a b", "@"):
        with pytest.raises(ValidationError) as exc:
            allowed_hosts_policy(bad_setting, "127.0.0.1")
        assert exc.value.code == "invalid_host"
