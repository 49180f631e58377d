"""Parsing one log line: JSON lines, syslog (RFC 3164 / 5424), logfmt, access logs, plain text, bad input."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from openmanager.core import logparse
from openmanager.core.logparse import (
    MAX_LINE_BYTES,
    guess_level,
    parse_level,
    parse_line,
    parse_timestamp,
)
from openmanager.core.model import LogLevel, LogRecord

NOW = datetime(2024, 11, 26, 14, 5, 6, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def ms(*args: int, tz: timezone = UTC) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def parse(line: str | bytes, **kw: object) -> LogRecord:
    return parse_line(line, now_ms=NOW_MS, server="srv-1", service="file", tz=UTC, **kw)  # type: ignore[arg-type]


# -- JSON lines -----------------------------------------------------------------------------------------


def test_json_line_with_iso_time_level_message_service_and_extra_fields() -> None:
    rec = parse('{"ts": "2024-11-26T13:00:00.250Z", "level": "warn", "msg": "disk 91%", "service": "api",'
                ' "user": "bob", "n": 3, "ctx": {"a": [1, 2]}}\n')
    assert rec.ts == ms(2024, 11, 26, 13, 0, 0) + 250
    assert rec.level is LogLevel.WARN
    assert rec.message == "disk 91%"
    assert rec.service == "api"
    assert rec.server == "srv-1"
    assert rec.fields == {"user": "bob", "n": 3, "ctx": {"a": [1, 2]}}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("time", 1732629906, 1732629906000),  # epoch seconds
        ("timestamp", 1732629906.5, 1732629906500),  # fractional seconds
        ("ts", 1732629906123, 1732629906123),  # epoch milliseconds
        ("ts", 1732629906123456, 1732629906123),  # microseconds
        ("ts", 1732629906123456789, 1732629906123),  # nanoseconds
        ("ts", "1732629906", 1732629906000),  # numeric text
        ("@timestamp", "2024-11-26T14:05:06+02:00", ms(2024, 11, 26, 12, 5, 6)),
        ("time", "2024-11-26 14:05:06.123456789Z", ms(2024, 11, 26, 14, 5, 6) + 123),  # nanosecond fraction
        ("time", "2024-11-26T14:05:06", ms(2024, 11, 26, 14, 5, 6)),  # no zone: tz (UTC here)
    ],
)
def test_json_timestamps(key: str, value: object, expected: int) -> None:
    assert parse(orjson.dumps({key: value, "msg": "x"})).ts == expected


def test_json_naive_time_is_read_in_the_given_zone() -> None:
    plus2 = timezone(timedelta(hours=2))
    rec = parse_line('{"time": "2024-11-26T14:05:06", "msg": "x"}', now_ms=NOW_MS, server="s", tz=plus2)
    assert rec.ts == ms(2024, 11, 26, 12, 5, 6)


@pytest.mark.parametrize(
    ("fields", "level"),
    [
        ({"severity": "ERROR"}, LogLevel.ERROR),
        ({"levelname": "WARNING"}, LogLevel.WARN),
        ({"level": "fatal"}, LogLevel.CRITICAL),
        ({"level": "trace"}, LogLevel.DEBUG),
        ({"level": "notice"}, LogLevel.INFO),
        ({"level": 50}, LogLevel.ERROR),  # pino/bunyan numbers
        ({"level": 40}, LogLevel.WARN),
        ({"level": 60}, LogLevel.CRITICAL),
        ({"level": 20}, LogLevel.DEBUG),
        ({"level": 3}, LogLevel.ERROR),  # syslog severity
        ({"level": "30"}, LogLevel.INFO),
        ({}, LogLevel.INFO),
    ],
)
def test_json_levels(fields: dict[str, object], level: LogLevel) -> None:
    assert parse(orjson.dumps({"msg": "something", **fields})).level is level


def test_json_unknown_level_is_kept_as_a_field_and_guessed_from_the_message() -> None:
    rec = parse('{"level": "loud", "message": "ERROR: out of cheese"}')
    assert rec.level is LogLevel.ERROR
    assert rec.fields == {"level": "loud"}
    assert rec.message == "ERROR: out of cheese"


@pytest.mark.parametrize("key", ["service", "app", "application", "logger", "logger_name"])
def test_json_service_keys(key: str) -> None:
    rec = parse(orjson.dumps({key: "billing", "msg": "x"}))
    assert rec.service == "billing"
    assert key not in rec.fields


def test_json_without_message_keeps_the_line_and_unreadable_time_stays_a_field() -> None:
    line = '{"event": "login", "time": "yesterday-ish"}'
    rec = parse(line)
    assert rec.message == line
    assert rec.ts == NOW_MS
    assert rec.fields == {"event": "login", "time": "yesterday-ish"}


def test_json_values_are_made_json_safe() -> None:
    deep: object = "leaf"
    for _ in range(20):
        deep = {"d": deep}
    line = orjson.dumps({"msg": "x", "deep": deep}).decode()[:-1] + f', "big": {2**70}}}'
    rec = parse(line)
    out = orjson.loads(orjson.dumps(rec.to_dict()))  # serialisable
    level = out["deep"]
    depth = 0
    while isinstance(level, dict):
        level = level["d"]
        depth += 1
    assert 1 <= depth < 20 and isinstance(level, str) and "leaf" in level
    assert out["big"] == pytest.approx(2**70)


def test_json_that_is_not_an_object_is_plain_text() -> None:
    for line in ('["ERROR", 1]', '"just a string"', "{not json}"):
        rec = parse(line)
        assert rec.message == line and rec.fields == {}


# -- syslog ---------------------------------------------------------------------------------------------


def test_rfc3164_with_pri() -> None:
    rec = parse("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8")
    assert rec.level is LogLevel.CRITICAL  # 34 = auth.crit
    assert rec.service == "su"
    assert rec.message == "'su root' failed for lonvick on /dev/pts/8"
    assert rec.fields == {"host": "mymachine", "facility": "auth"}
    assert rec.ts == ms(2024, 10, 11, 22, 14, 15)


@pytest.mark.parametrize(
    ("pri", "level"),
    [(0, LogLevel.CRITICAL), (11, LogLevel.ERROR), (12, LogLevel.WARN), (13, LogLevel.INFO), (14, LogLevel.INFO),
     (15, LogLevel.DEBUG), (191, LogLevel.DEBUG)],
)
def test_rfc3164_pri_levels(pri: int, level: LogLevel) -> None:
    rec = parse(f"<{pri}>Nov 26 14:00:00 host app: ERROR but the PRI wins")
    assert rec.level is level


def test_rfc3164_file_line_without_pri_guesses_level_from_the_message() -> None:
    rec = parse("Nov 26 14:05:01 web-1 sshd[4242]: error: kex_exchange_identification: connection closed")
    assert rec.level is LogLevel.ERROR
    assert rec.service == "sshd"
    assert rec.fields == {"host": "web-1", "pid": "4242"}
    assert rec.message == "error: kex_exchange_identification: connection closed"
    assert rec.ts == ms(2024, 11, 26, 14, 5, 1)


def test_rfc3164_single_digit_day_and_no_tag() -> None:
    rec = parse("Nov  6 09:08:07 web-1 something happened")
    assert rec.ts == ms(2024, 11, 6, 9, 8, 7)
    assert rec.service == "file"
    assert rec.fields == {"host": "web-1"}
    assert rec.message == "something happened"
    kernel = parse("Nov  6 09:08:07 web-1 kernel: [  12.5] usb 1-1: new device")
    assert kernel.service == "kernel" and kernel.message == "[  12.5] usb 1-1: new device"


def test_rfc3164_year_is_the_one_closest_to_now() -> None:
    new_year = int(datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp() * 1000)
    rec = parse_line("Dec 31 23:59:59 h app: late", now_ms=new_year, server="s", tz=UTC)
    assert rec.ts == ms(2024, 12, 31, 23, 59, 59)
    early = parse_line("Jan  1 00:00:10 h app: skewed clock", now_ms=ms(2024, 12, 31, 23, 59, 50), server="s", tz=UTC)
    assert early.ts == ms(2025, 1, 1, 0, 0, 10)


def test_rfc3164_with_rfc3339_stamp() -> None:
    rec = parse("2024-11-26T14:05:06.123456+01:00 db-1 postgres[77]: WARNING:  checkpoints are too frequent")
    assert rec.ts == ms(2024, 11, 26, 13, 5, 6) + 123
    assert rec.service == "postgres"
    assert rec.level is LogLevel.WARN
    assert rec.fields == {"host": "db-1", "pid": "77"}


def test_rfc5424_with_structured_data_and_bom() -> None:
    rec = parse('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
                '[exampleSDID@32473 iut="3" eventSource="Appli\\"cation"][x@1 a="b"] \ufeffAn application event')
    assert rec.level is LogLevel.INFO  # 165 = local4.notice
    assert rec.ts == ms(2003, 10, 11, 22, 14, 15) + 3
    assert rec.service == "evntslog"
    assert rec.message == "An application event"
    assert rec.fields == {
        "facility": "local4",
        "host": "mymachine.example.com",
        "msgid": "ID47",
        "sd": {"exampleSDID@32473": {"iut": "3", "eventSource": 'Appli"cation'}, "x@1": {"a": "b"}},
    }


def test_rfc5424_nil_values() -> None:
    rec = parse("<11>1 - - - - - - disk failed")
    assert rec.level is LogLevel.ERROR
    assert rec.ts == NOW_MS
    assert rec.service == "file"
    assert rec.message == "disk failed"
    assert rec.fields == {"facility": "user"}


def test_pri_followed_by_free_text() -> None:
    rec = parse("<12>just words")
    assert rec.level is LogLevel.WARN and rec.message == "just words"


# -- logfmt and access logs -------------------------------------------------------------------------------


def test_logfmt() -> None:
    rec = parse('ts=2024-11-26T10:00:00Z level=warn msg="slow query \\"users\\"" dur=2.5s caller=db.go:12')
    assert rec.level is LogLevel.WARN
    assert rec.message == 'slow query "users"'
    assert rec.ts == ms(2024, 11, 26, 10, 0, 0)
    assert rec.fields == {"dur": "2.5s", "caller": "db.go:12"}


def test_text_with_an_equals_sign_is_not_logfmt() -> None:
    rec = parse("retrying with x=1 after failure")
    assert rec.message == "retrying with x=1 after failure" and rec.fields == {}


@pytest.mark.parametrize(("status", "level"), [(200, LogLevel.INFO), (404, LogLevel.WARN), (502, LogLevel.ERROR)])
def test_combined_access_log(status: int, level: LogLevel) -> None:
    line = f'10.0.0.7 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" {status} 2326 "http://r/" "curl/8"'
    rec = parse(line)
    assert rec.level is level
    assert rec.ts == ms(2000, 10, 10, 20, 55, 36)
    assert rec.message == line
    assert rec.fields == {"remote": "10.0.0.7", "request": "GET /a.gif HTTP/1.0", "status": status, "bytes": 2326,
                          "user": "frank", "referer": "http://r/", "agent": "curl/8"}


# -- plain text -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("ERROR something broke", LogLevel.ERROR),
        ("error: lower case leading word", LogLevel.ERROR),
        ("[WARN] bracketed", LogLevel.WARN),
        ("WARNING: spelled out", LogLevel.WARN),
        ("main [CRIT] second word bracketed", LogLevel.CRITICAL),
        ("worker-3 FATAL upper case second word", LogLevel.CRITICAL),
        ("<debug> angle brackets", LogLevel.DEBUG),
        ("INFO:root:python logging default", LogLevel.INFO),
        ("panic: runtime error", LogLevel.CRITICAL),
        ("the error was small", LogLevel.INFO),  # not leading, not bracketed, not upper case
        ("nothing to see", LogLevel.INFO),
        ("ERRORS are plural", LogLevel.INFO),
    ],
)
def test_plain_text_levels(line: str, level: LogLevel) -> None:
    rec = parse(line)
    assert rec.level is level
    assert rec.message == line
    assert rec.ts == NOW_MS
    assert rec.service == "file"


@pytest.mark.parametrize(
    ("line", "ts", "message", "level"),
    [
        ("2024-11-26 10:00:01,250 ERROR [main] boom", ms(2024, 11, 26, 10, 0, 1) + 250, "ERROR [main] boom",
         LogLevel.ERROR),
        ("[2024-11-26T10:00:01Z] [warn] hmm", ms(2024, 11, 26, 10, 0, 1), "[warn] hmm", LogLevel.WARN),
        ("2024/11/26 10:00:01 listening on :8080", ms(2024, 11, 26, 10, 0, 1), "listening on :8080", LogLevel.INFO),
        ("2024-11-26T10:00:01+00:00 ERROR: disk full", ms(2024, 11, 26, 10, 0, 1), "ERROR: disk full",
         LogLevel.ERROR),
    ],
)
def test_plain_text_leading_timestamp(line: str, ts: int, message: str, level: LogLevel) -> None:
    rec = parse(line)
    assert (rec.ts, rec.message, rec.level, rec.fields) == (ts, message, level, {})


def test_line_endings_and_bytes() -> None:
    assert parse(b"WARN crlf line\r\n").message == "WARN crlf line"
    rec = parse(b"bad \xff\xfe bytes \x00 here\n")
    assert rec.message == "bad \ufffd\ufffd bytes  here"


# -- bounds and robustness ---------------------------------------------------------------------------------


def test_oversized_line_is_truncated_and_marked() -> None:
    rec = parse("ERROR " + "x" * (3 * MAX_LINE_BYTES))
    assert rec.fields.get("truncated") is True
    assert len(rec.message.encode()) <= MAX_LINE_BYTES
    assert rec.level is LogLevel.ERROR
    small = parse("x" * 100)
    assert "truncated" not in small.fields


def test_truncation_never_splits_a_character_into_garbage() -> None:
    rec = parse("é" * MAX_LINE_BYTES)  # two bytes each: the cut falls on a boundary or inside one
    assert rec.fields["truncated"] is True
    assert set(rec.message) == {"é"}


def test_caller_truncated_flag_is_kept() -> None:
    rec = parse('{"msg": "cut"}', truncated=True)
    assert rec.message == "cut" and rec.fields == {"truncated": True}


def test_helpers() -> None:
    assert parse_level("Warning") is LogLevel.WARN
    assert parse_level(True) is None and parse_level("loud") is None and parse_level(float("nan")) is None
    assert parse_level(-5) is None
    assert guess_level("[ERROR] x") is LogLevel.ERROR and guess_level("") is None
    assert parse_timestamp("2024-13-01T00:00:00Z") is None
    assert parse_timestamp(-1) is None and parse_timestamp(0) is None and parse_timestamp(True) is None
    assert parse_timestamp(float("inf")) is None
    assert parse_timestamp("2024-11-26T10:00:00+25:00") is None


def test_garbage_never_raises() -> None:
    rng = random.Random(4)
    samples: list[str | bytes] = [
        "", " ", "\n", "{", "}", "{}", "<", "<>", "<1>", "<999>x", "<1>1", "<1>1 ", "<13>1 - - - - - [", "[", "]",
        "=", "a=", "=b", 'a="unterminated', "Feb 29 10:00:00 h app: leap", "Feb 30 10:00:00 h app: no such day",
        "Foo 12 10:00:00 h app: bad month", "9999-99-99T99:99:99Z x", '{"ts": 1e400}', '{"ts": "NaN"}',
        '{"level": {"a": 1}}', '{"msg": 5}', "[" * 5000, "{" * 5000 + "}" * 5000, '{"a":' * 3000,
        "\x00\x01\x02", "\u2028", 'x=1 y="2', "0.0.0.0 - - [] \"\" 999 -",
        "10.0.0.1 - - [99/Foo/2024:99:99:99 +9999] \"GET /\" 200 -",
    ]
    for _ in range(300):
        n = rng.randint(0, 80)
        samples.append(bytes(rng.randrange(256) for _ in range(n)))
        alphabet = '<>[]{}=":, 0123456789TZ-+.abcERRORWARN\\'
        samples.append("".join(rng.choice(alphabet) for _ in range(n)))
    for line in samples:
        # the parser itself must cope, not only parse_line's last-resort fallback
        text, _ = logparse._decode(line)
        logparse._parse(text, now_ms=NOW_MS, server="srv-1", service="file", tz=UTC, truncated=False)
        rec = parse(line)
        assert isinstance(rec, LogRecord) and isinstance(rec.level, LogLevel)
        assert rec.ts > 0 and rec.server == "srv-1"
        orjson.dumps(rec.to_dict())  # always serialisable
