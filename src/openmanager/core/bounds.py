"""Bounded parsing of the numbers clients send: integers, durations and timestamps.

The integers, durations and times requests carry (query parameters, JSON fields) are parsed here, or
checked against the bounds defined here, so that the rest of the hub only ever sees values the store
can hold and the clock can use:

- digits are ASCII `0`-`9` only (never `str.isdigit()`, which also accepts superscripts and
  other scripts' digits);
- the text looked at is bounded (`MAX_TEXT` characters), so no conversion is ever expensive;
- integers fit SQLite's signed 64 bits, timestamps lie in `0 … MAX_EPOCH_MS` (the end of year 9999)
  and durations in `1 ms … MAX_DURATION_MS` (ten years).

Anything else raises `ParameterError` (a `ValidationError`, wire code `invalid_parameter`) whose message
names the parameter, what it accepts and (shortened) what was sent. Nothing here raises anything else.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

from openmanager.core.errors import ValidationError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_EPOCH_MS = 253_402_300_799_999
"""The last millisecond of 9999-12-31 (UTC): the latest timestamp accepted."""
MAX_DURATION_MS = 3650 * 86_400_000
"""Ten years (3650d): the longest duration accepted."""
MAX_TEXT = 64
"""Longest number or duration text looked at, in characters (surrounding spaces included)."""

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# `[0-9]` in a str pattern is the ASCII range only (unlike `\d`); `fullmatch` so no trailing newline slips by
_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")
_DURATION_RE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?)([smhd])")
_SPACES = " \t"
_UNSEARCHABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class ParameterError(ValidationError):
    """A number, duration or time that is malformed or out of range (HTTP 400 `invalid_parameter`)."""

    code = "invalid_parameter"


def shown(text: str, limit: int = 40) -> str:
    """`text` quoted (escapes shown) for an error message, at most about `limit` characters of it."""
    quoted = repr(text[:limit])
    if len(text) <= limit and len(quoted) <= limit + 2:
        return quoted
    return quoted[:limit + 1] + f"…' ({len(text)} characters)"


def _bounded_text(text: object, name: str, what: str) -> str:
    if not isinstance(text, str):
        raise ParameterError(f"{name} must be {what}")
    if len(text) > MAX_TEXT:
        raise ParameterError(f"{name} must be {what}, at most {MAX_TEXT} characters")
    return text.strip(_SPACES)


def check_int(value: object, name: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """A JSON integer (`bool` is not one) within `minimum … maximum`, else `ParameterError`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterError(f"{name} must be an integer")
    if not minimum <= value <= maximum:  # a comparison, never a conversion: safe for any size
        raise ParameterError(f"{name} must be between {minimum} and {maximum}")
    return value


def parse_int(text: object, name: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """Decimal ASCII digits with an optional sign, within `minimum … maximum`, else `ParameterError`."""
    what = f"an integer between {minimum} and {maximum}"
    stripped = _bounded_text(text, name, what)
    if _INT_RE.fullmatch(stripped) is None:
        raise ParameterError(f"{name} must be {what}, not {shown(stripped)}")
    return check_int(int(stripped), name, minimum=minimum, maximum=maximum)


def parse_duration(text: object, name: str, *, maximum: int = MAX_DURATION_MS) -> int:
    """A duration such as `30s`, `5m`, `1.5h` or `7d` in whole milliseconds (rounded half to even), from
    1 ms to `maximum`, else `ParameterError`. Units are lower-case `s`, `m`, `h`, `d`."""
    what = "a duration like 30s, 15m, 1.5h or 7d"
    stripped = _bounded_text(text, name, what)
    match = _DURATION_RE.fullmatch(stripped)
    if match is None:
        raise ParameterError(f"{name} must be {what}, not {shown(stripped)}")
    ms = (Decimal(match.group(1)) * _UNIT_MS[match.group(2)]).to_integral_value(ROUND_HALF_EVEN)
    if ms < 1:
        raise ParameterError(f"{name} must be at least 1 ms, not {shown(stripped)}")
    if ms > maximum:
        raise ParameterError(f"{name} must be at most {maximum // 86_400_000}d, not {shown(stripped)}"
                             if maximum % 86_400_000 == 0 else f"{name} must be at most {maximum} ms")
    return int(ms)


def check_epoch_ms(value: object, name: str) -> int:
    """A JSON integer that is a timestamp in epoch milliseconds (`0 … MAX_EPOCH_MS`)."""
    return check_int(value, name, minimum=0, maximum=MAX_EPOCH_MS)


def parse_time(text: object, name: str, now_ms: int) -> int:
    """A point in time as epoch milliseconds: either the digits of one (`1733580000000`) or a duration
    back from `now_ms` (`15m` means 15 minutes ago). A JSON integer is taken as epoch milliseconds.
    The result lies in `0 … MAX_EPOCH_MS`; anything else raises `ParameterError`."""
    what = "epoch milliseconds or a duration back from now like 15m"
    if isinstance(text, int) and not isinstance(text, bool):
        return check_epoch_ms(text, name)
    stripped = _bounded_text(text, name, what)
    if stripped.isascii() and stripped.isdecimal():
        return parse_int(stripped, name, minimum=0, maximum=MAX_EPOCH_MS)
    if _DURATION_RE.fullmatch(stripped) is None:
        raise ParameterError(f"{name} must be {what}, not {shown(stripped)}")
    return max(0, now_ms - parse_duration(stripped, name))


def check_text(value: object, name: str, *, max_length: int) -> str:
    """A string of at most `max_length` characters with no control characters (C0, DEL, C1: NUL among
    them, which the store cannot search) and no lone surrogates, else `ParameterError`."""
    if not isinstance(value, str):
        raise ParameterError(f"{name} must be a string")
    if len(value) > max_length:
        raise ParameterError(f"{name} must be at most {max_length} characters")
    bad = _UNSEARCHABLE.search(value)
    if bad is not None:
        raise ParameterError(f"{name} must not contain control characters "
                             f"(U+{ord(bad.group()):04X} at position {bad.start()})")
    return value
