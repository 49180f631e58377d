"""Accounts, roles and login throttling: the pure parts (no I/O, no clock of their own).

Roles are ordered `viewer` < `operator` < `admin`; a role grants everything the lower ones do. User names
are the users' stable ids (notifications, preferences and `created_by` fields are keyed by them), so they
are normalised once, to lower case, and kept short and URL-safe.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from openmanager.core.errors import ValidationError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "LimitPolicy",
    "LoginAttempt",
    "LoginLimiter",
    "LoginRefused",
    "allowed_hosts_policy",
    "has_role",
    "host_allowed",
    "host_name",
    "is_loopback_host",
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
    max_failures: int = 5  # attempts that did not succeed, per account and per address, in the window
    window_ms: int = 5 * 60_000
    max_keys: int = 10_000  # per kind (accounts, addresses); the least recently used are forgotten first
    checks_per_account: int = 2  # password checks running at once for one account
    checks_per_address: int = 4  # password checks running at once from one client address
    busy_retry_ms: int = 1_000  # Retry-After for an attempt turned away only because checks were running


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """An admitted attempt: it holds a slot in the window (and a running check) until `LoginLimiter.end`."""

    account: str | None  # the account's key (normalised name), None for a token login
    address: str | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class LoginRefused:
    """Not admitted: answer 429 with `Retry-After` (`retry_after_ms`, at least 1 ms). `busy`: turned away
    only because other checks for the account or from the address were running (the attempt counted)."""

    retry_after_ms: int
    busy: bool = False


class LoginLimiter:
    """Login attempts per account and per client address, in a sliding window; counts attempts, not results.

    `begin(account, address, now_ms)` is called *before* the password check. It refuses (`LoginRefused`) when
    the account or the address already holds `max_failures` slots in the window. Otherwise the attempt takes
    a slot on both at once, so concurrent attempts see each other: of any burst, at most `max_failures` per
    account and per address are admitted in a window. An admitted attempt is also refused, but keeps its
    slot, when `checks_per_account` checks for the account or `checks_per_address` from the address are
    running (it reached no check; it still counts, so a burst cannot get past the limit by being refused).
    Otherwise it returns a `LoginAttempt`, and the caller runs the check and must call
    `end(attempt, succeeded)` whatever happens (try/finally).

    `end(attempt, True)` clears the account's slots and gives back this attempt's slot on the address (so
    a user signing in often is not limited); other slots on the address stay (else one valid account
    would let an address guess others without limit). `end(attempt, False)` keeps the slot: a failure.

    So after 5 failures from one address, that address cannot try another account either, and after 5 on
    one account (from anywhere), nobody can try a password on it, the right one included, until the oldest
    leaves the window. Memory is bounded: at most `max_failures` timestamps per key, `max_keys` keys per
    kind, and one counter per running check.
    """

    def __init__(self, policy: LimitPolicy | None = None) -> None:
        self.policy = policy or LimitPolicy()
        self._accounts: OrderedDict[str, deque[int]] = OrderedDict()
        self._addresses: OrderedDict[str, deque[int]] = OrderedDict()
        self._account_checks: dict[str, int] = {}
        self._address_checks: dict[str, int] = {}

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
        return max(1, times[0] + self.policy.window_ms - now_ms)

    def retry_after_ms(self, account: str | None, address: str | None, now_ms: int) -> int:
        """0 when an attempt would be admitted to the window now, else the milliseconds to wait."""
        wait = 0
        if account is not None:
            wait = self._wait(self._accounts, _key(account), now_ms)
        if address is not None:
            wait = max(wait, self._wait(self._addresses, address, now_ms))
        return wait

    def begin(self, account: str | None, address: str | None, now_ms: int) -> LoginAttempt | LoginRefused:
        """Admit an attempt (before its check) or refuse it; see the class. `account` is None for a token
        login (counted against the address only)."""
        wait = self.retry_after_ms(account, address, now_ms)
        if wait:
            return LoginRefused(wait)
        key = None if account is None else _key(account)
        if key is not None:
            self._add(self._accounts, key, now_ms)
        if address is not None:
            self._add(self._addresses, address, now_ms)
        busy = (key is not None and self._account_checks.get(key, 0) >= self.policy.checks_per_account) or (
            address is not None and self._address_checks.get(address, 0) >= self.policy.checks_per_address)
        if busy:
            wait = self.retry_after_ms(account, address, now_ms)  # this attempt may have filled the window
            return LoginRefused(max(self.policy.busy_retry_ms, wait), busy=not wait)
        if key is not None:
            self._account_checks[key] = self._account_checks.get(key, 0) + 1
        if address is not None:
            self._address_checks[address] = self._address_checks.get(address, 0) + 1
        return LoginAttempt(key, address, now_ms)

    def end(self, attempt: LoginAttempt, succeeded: bool) -> None:
        """The attempt's check finished (or was abandoned: `succeeded` False). Call exactly once."""
        if attempt.account is not None:
            _release(self._account_checks, attempt.account)
            if succeeded:
                self._accounts.pop(attempt.account, None)
        if attempt.address is not None:
            _release(self._address_checks, attempt.address)
            if succeeded:
                times = self._addresses.get(attempt.address)
                if times is not None and attempt.at_ms in times:
                    times.remove(attempt.at_ms)

    def _add(self, table: OrderedDict[str, deque[int]], key: str, now_ms: int) -> None:
        times = table.get(key)
        if times is None:
            times = table[key] = deque(maxlen=self.policy.max_failures)
            while len(table) > self.policy.max_keys:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        times.append(now_ms)


def _release(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _key(account: str) -> str:
    """Accounts are counted by their normalised name, so `Bob` and `bob` share a budget; anything too long
    to be a name is cut (the key's size is bounded whatever is sent)."""
    return account.strip().lower()[:80]


# -- Host header check (against DNS rebinding) ---------------------------------------------------------------


def host_name(header: str) -> str | None:
    """The host name of a `Host` header (`name`, `name:port`, `[v6]:port`), lower case, without a trailing
    dot; None when it is not one."""
    text = header.strip().lower()
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdecimal())):
            return None
        try:
            return str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    name, _, port = text.partition(":")
    if (port and not port.isdecimal()) or ":" in port:
        return None
    name = name.rstrip(".")
    return name if name and _HOST_RE.fullmatch(name) else None


_HOST_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def is_loopback_host(name: str) -> bool:
    """`localhost`, a name under `.localhost` (RFC 6761: never looked up in DNS), or a loopback address."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether a request with this `Host` header is served. `allowed` None: every host is. Otherwise a
    missing header (HTTP/1.0 programs; browsers always send one) and loopback names are allowed, and names
    in `allowed`, exactly or, for an entry `*.example.com`, any name under `example.com`."""
    if allowed is None or header is None:
        return True
    name = host_name(header)
    if name is None:
        return False
    if is_loopback_host(name) or name in allowed:
        return True
    return any(entry.startswith("*.") and name.endswith(entry[1:]) for entry in allowed)


def allowed_hosts_policy(setting: str, bind_host: str, public_url: str = "") -> frozenset[str] | None:
    """The `allowed` set for `host_allowed` from the `allowed_hosts` setting (comma-separated names,
    `*.suffix` patterns, or `*` for any), the address the hub binds and its `public_url`. Empty setting:
    loopback names only (plus the public URL's host) when bound to loopback, else no check (None).
    Raises ValidationError (code `invalid_host`) for an entry that is no host name."""
    entries = [part.strip().lower().rstrip(".") for part in setting.split(",") if part.strip()]
    if "*" in entries:
        return None
    names = {_allowed_entry(entry) for entry in entries}
    if not names and not is_loopback_host(bind_host.strip().strip("[]").lower() or "localhost"):
        return None
    public = urlsplit(public_url).hostname if public_url else None
    if public:
        names.add(public.rstrip("."))
    return frozenset(names)


def _allowed_entry(entry: str) -> str:
    wildcard = entry.startswith("*.")
    bare = (entry[2:] if wildcard else entry).strip("[]")
    if not wildcard:
        try:
            return str(ipaddress.IPv6Address(bare))
        except ValueError:
            pass
    if host_name(bare) != bare:
        raise ValidationError(f"allowed_hosts: {entry!r} is not a host name or address", code="invalid_host")
    return f"*.{bare}" if wildcard else bare
