"""The one bounded parser (`core.bounds`): arbitrary text gives a value in range or a `ParameterError`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from openmanager.core.bounds import (
    INT64_MAX,
    INT64_MIN,
    MAX_DURATION_MS,
    MAX_EPOCH_MS,
    MAX_TEXT,
    ParameterError,
    check_epoch_ms,
    check_int,
    check_text,
    parse_duration,
    parse_int,
    parse_time,
    shown,
)
from openmanager.core.cursor import parse_cursor
from openmanager.core.errors import OpenManagerError, ValidationError
from openmanager.core.model import LogLevel

NOW = 1_765_000_000_000
# text that looks like numbers: digits of every script, signs, units, dots, spaces
OTHER_DIGITS = "\u00b2\u00b3\u00b9\u0661\u0662\u07c0"  # superscripts, Arabic-Indic, NKo: isdigit() says yes
NUMBERISH = st.text(alphabet=st.sampled_from("0123456789+-.smhdx e_\x00\n\t\u00a0" + OTHER_DIGITS), max_size=40)
ANY_TEXT = st.one_of(st.text(max_size=80), NUMBERISH)
SEEN = ("4\u00b3", "\u00b2", "99999999999999999999999999", "99999999999999999999d", "99999999999999d",
        "9" * 5000, "-1", "1\n", "1_000", " 15m ", "0", "", "1e3", "+5", "\u0661\u0662")


def test_the_error_is_the_projects_validation_error() -> None:
    assert issubclass(ParameterError, ValidationError) and issubclass(ParameterError, OpenManagerError)
    assert ParameterError("x").code == "invalid_parameter"


@given(ANY_TEXT)
@example("4\u00b3")
@example("9" * 5000)
@example("99999999999999999999999999")
def test_parse_int_is_in_range_or_a_parameter_error(text: str) -> None:
    try:
        value = parse_int(text, "n")
    except ParameterError as exc:
        assert exc.message.startswith("n ")
        assert len(exc.message) < 200
    else:
        assert INT64_MIN <= value <= INT64_MAX
        assert text.strip(" \t").lstrip("+-").isascii()


@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_parse_int_reads_every_int64(value: int) -> None:
    assert parse_int(str(value), "n") == value
    assert parse_int(f" {value}\t", "n") == value


@given(st.integers(), st.integers(-1000, 1000), st.integers(0, 1000))
def test_parse_int_bounds_are_inclusive_and_enforced(value: int, low: int, span: int) -> None:
    high = low + span
    if low <= value <= high:
        assert parse_int(str(value), "n", minimum=low, maximum=high) == value
    else:
        with pytest.raises(ParameterError):
            parse_int(str(value), "n", minimum=low, maximum=high)


@pytest.mark.parametrize("text", [*OTHER_DIGITS, "4\u00b3", "1\n", "1 2", "1_000", "0x10", "1e3", "",
                                  "9223372036854775808", "-9223372036854775809", "9" * (MAX_TEXT + 1)])
def test_parse_int_refuses(text: str) -> None:
    with pytest.raises(ParameterError):
        parse_int(text, "n")


@given(ANY_TEXT)
@example("99999999999999999999d")
@example("1.00000000000000000001s")
def test_parse_duration_is_in_range_or_a_parameter_error(text: str) -> None:
    try:
        value = parse_duration(text, "d")
    except ParameterError:
        pass
    else:
        assert 1 <= value <= MAX_DURATION_MS


@given(st.integers(1, 3650), st.sampled_from([("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]))
def test_parse_duration_reads_documented_forms(n: int, unit: tuple[str, int]) -> None:
    assert parse_duration(f"{n}{unit[0]}", "d") == n * unit[1]


def test_parse_duration_examples_and_limits() -> None:
    assert parse_duration("1.5h", "d") == 5_400_000
    assert parse_duration(" 15m ", "d") == 900_000
    assert parse_duration("3650d", "d") == MAX_DURATION_MS
    for bad in ("3651d", "0s", "0.0001s", "5", "5M", "-5m", "5 m", "²m", "1.m"):
        with pytest.raises(ParameterError):
            parse_duration(bad, "d")
    with pytest.raises(ParameterError, match="at most 1d"):
        parse_duration("25h", "d", maximum=86_400_000)


@given(st.one_of(ANY_TEXT, st.integers(), st.booleans(), st.none(), st.floats(), st.lists(st.integers())))
@example(10**5000)
@example("99999999999999d")
def test_parse_time_is_in_range_or_a_parameter_error(value: object) -> None:
    try:
        ts = parse_time(value, "since", NOW)
    except ParameterError as exc:
        assert "since" in exc.message
    else:
        assert 0 <= ts <= MAX_EPOCH_MS


@pytest.mark.parametrize("text", SEEN)
def test_the_reproducers_of_issue_19(text: str) -> None:
    """Each is in range or a ParameterError for every parser (once: a ValueError, or a 500 downstream)."""
    checks: list[tuple[Callable[[str], int], int, int]] = [
        (partial(parse_time, name="since", now_ms=NOW), 0, MAX_EPOCH_MS),
        (partial(parse_int, name="n"), INT64_MIN, INT64_MAX),
        (partial(parse_duration, name="d"), 1, MAX_DURATION_MS),
    ]
    for parse, low, high in checks:
        try:
            value = parse(text)
        except ParameterError:
            continue
        assert low <= value <= high


def test_parse_time_forms() -> None:
    assert parse_time("15m", "since", NOW) == NOW - 900_000
    assert parse_time("1733580000000", "since", NOW) == 1_733_580_000_000
    assert parse_time(1_733_580_000_000, "since", NOW) == 1_733_580_000_000
    assert parse_time("0", "since", NOW) == 0
    assert parse_time("3650d", "since", 1000) == 0  # clamped at the epoch
    with pytest.raises(ParameterError, match="at most 3650d"):
        parse_time("99999999999999d", "since", NOW)
    for bad in ("4\u00b3", str(MAX_EPOCH_MS + 1), "-1", True, 1.5, None, -1):
        with pytest.raises(ParameterError):
            parse_time(bad, "since", NOW)


@given(st.one_of(st.integers(), st.booleans(), st.floats(), st.text(max_size=5)))
def test_check_int_and_epoch(value: object) -> None:
    for check, low, high in ((check_int, INT64_MIN, INT64_MAX), (check_epoch_ms, 0, MAX_EPOCH_MS)):
        try:
            got = check(value, "x")
        except ParameterError:
            assert not (type(value) is int and low <= value <= high)
        else:
            assert type(value) is int and got == value and low <= got <= high


@given(st.text(max_size=50))
@example("a\x00b")
@example("\ud800")
def test_check_text_keeps_only_searchable_text(text: str) -> None:
    try:
        assert check_text(text, "contains", max_length=30) == text
    except ParameterError:
        assert len(text) > 30 or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
                                     for c in text)
    else:
        assert len(text) <= 30 and "\x00" not in text


def test_cursors_are_bounded_and_ascii() -> None:
    assert parse_cursor("ab12-9223372036854775807") == ("ab12", INT64_MAX)
    for bad in ("ab12-9223372036854775808", "ab12-5\n", "ab12-\u00b9", "AB-1", "ab-", 7):
        assert parse_cursor(bad) is None


def test_a_filter_interval_is_read_by_the_bounded_parser() -> None:
    from openmanager.core.filters import parse_filter

    for bad in ("9" * 65_000 + "s", "\u00b9s", "5"):
        with pytest.raises(ValidationError) as info:
            parse_filter("metrics", {"interval": bad})
        assert info.value.code == "invalid_filter" and len(info.value.message) < 200
    assert parse_filter("metrics", {"interval": "1.5s"}).interval_ms == 1500


@pytest.mark.parametrize(("size", "kept"), [("512", 512), ("\u00b2", None), ("9" * 5000, None), ("-", None)])
def test_an_access_log_line_keeps_only_a_bounded_ascii_byte_count(size: str, kept: int | None) -> None:
    from openmanager.core.logparse import parse_line

    record = parse_line(f'1.2.3.4 - - [07/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 404 {size}', server="x", now_ms=0)
    assert record is not None and record.fields.get("status") == 404 and record.level is LogLevel.WARN
    assert record.fields.get("bytes") == kept


@given(st.text(max_size=200))
def test_shown_is_short(text: str) -> None:
    assert len(shown(text)) <= 70
