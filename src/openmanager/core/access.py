"""Accounts, roles and login throttling: the pure parts (no I/O, no clock of their own).

Roles are ordered `viewer` < `operator` < `admin`; a role grants everything the lower ones do. User names
are the users' stable ids (notifications, preferences and `created_by` fields are keyed by them), so they
are normalised once, to lower case, and kept short and URL-safe.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass

from openmanager.core.errors import ValidationError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "LoginLimiter",
    "has_role",
    "normalize_user_name",
    "validate_password",
    "validate_role",
]

ROLES = ("viewer", "operator", "admin")  # ascending
_RANK = {role: i for i, role in enumerate(ROLES)}
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # hashing cost must not depend on what a stranger sends
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


def has_role(role: str, needed: str) -> bool:
    """Whether `role` grants `needed` (admin > operator > viewer). An unknown role grants nothing.
    Raises ValueError for an unknown `needed` (a programming error, not input)."""
    if needed not in _RANK:
        raise ValueError(f"unknown role {needed!r}")
    rank = _RANK.get(role)
    return rank is not None and rank >= _RANK[needed]


def validate_role(role: object) -> str:
    """The role, or ValidationError (code `invalid_role`)."""
    if not isinstance(role, str) or role not in _RANK:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    return role


def normalize_user_name(name: object) -> str:
    """The user name in its stored form (lower case), or ValidationError (code `invalid_name`): 1-64
    letters, digits, `.`, `_`, `@` or `-`, starting with a letter or digit."""
    if isinstance(name, str):
        lowered = name.strip().lower()
        if _NAME_RE.fullmatch(lowered):
            return lowered
    raise ValidationError(
        "a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        code="invalid_name",
    )


def validate_password(password: object) -> str:
    """The password, or ValidationError (code `weak_password`): at least 10 characters, at most 1024."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"a password has at least {MIN_PASSWORD_LENGTH} characters", code="weak_password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(f"a password has at most {MAX_PASSWORD_LENGTH} characters", code="invalid_password")
    return password


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    max_failures: int = 5
    window_ms: int = 5 * 60_000
    max_keys: int = 10_000  # per kind (accounts, addresses); the least recently failed are forgotten first


class LoginLimiter:
    """Failed logins per account and per client address, in a sliding window.

    `retry_after_ms(account, address, now_ms)` is 0 while both are under the limit, else how long until the
    oldest counted failure leaves the window. A login is refused when *either* is at the limit: so after 5
    failures from one address, that address cannot try another account either, and after 5 failures on
    one account (from anywhere), nobody can try a password on it until the window has moved on. A success
    clears the account's failures, not the address's (else one valid account would let an address guess
    others without limit).

    Memory is bounded: at most `max_failures` timestamps per key and `max_keys` keys per kind.
    """

    def __init__(self, policy: LimitPolicy | None = None) -> None:
        self.policy = policy or LimitPolicy()
        self._accounts: OrderedDict[str, deque[int]] = OrderedDict()
        self._addresses: OrderedDict[str, deque[int]] = OrderedDict()

    def _wait(self, table: OrderedDict[str, deque[int]], key: str, now_ms: int) -> int:
        times = table.get(key)
        if times is None:
            return 0
        while times and times[0] <= now_ms - self.policy.window_ms:
            times.popleft()
        if not times:
            del table[key]
            return 0
        if len(times) < self.policy.max_failures:
            return 0
        return times[0] + self.policy.window_ms - now_ms

    def retry_after_ms(self, account: str | None, address: str | None, now_ms: int) -> int:
        """0 when a login may be tried now, else the milliseconds to wait."""
        wait = 0
        if account is not None:
            wait = self._wait(self._accounts, _key(account), now_ms)
        if address is not None:
            wait = max(wait, self._wait(self._addresses, address, now_ms))
        return wait

    def failed(self, account: str | None, address: str | None, now_ms: int) -> None:
        """Count one failed attempt against the account (when one was named) and the address."""
        if account is not None:
            self._add(self._accounts, _key(account), now_ms)
        if address is not None:
            self._add(self._addresses, address, now_ms)

    def succeeded(self, account: str) -> None:
        self._accounts.pop(_key(account), None)

    def _add(self, table: OrderedDict[str, deque[int]], key: str, now_ms: int) -> None:
        times = table.get(key)
        if times is None:
            times = table[key] = deque(maxlen=self.policy.max_failures)
            while len(table) > self.policy.max_keys:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        times.append(now_ms)


def _key(account: str) -> str:
    """Accounts are counted by their normalised name, so `Bob` and `bob` share a budget; anything too long
    to be a name is cut (the key's size is bounded whatever is sent)."""
    return account.strip().lower()[:80]
