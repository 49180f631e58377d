"""`core.syslogparse`: syslog messages as records, and RFC 6587 framing, driven directly (no sockets)."""

from __future__ import annotations

from datetime import UTC

from hypothesis import given
from hypothesis import strategies as st

from openmanager.core.model import LogLevel
from openmanager.core.syslogparse import StreamFramer, parse_message, server_for_address

NOW = 1_764_165_906_000  # 2025-11-26T14:05:06Z


def test_rfc5424_hostname_names_the_server_and_keeps_facility_severity_and_structured_data() -> None:
    line = (b'<165>1 2025-11-26T14:05:06.123Z web-07 nginx 123 ID47 [exampleSDID@32473 iut="3" '
            b'eventSource="Application"][meta x="a\\"b"] upstream timed out')
    rec = parse_message(line, sender="10.0.0.9", now_ms=NOW)
    assert rec.server == "web-07"
    assert rec.service == "nginx"
    assert rec.level is LogLevel.INFO  # 165 = local4.notice
    assert rec.fields["facility"] == "local4" and rec.fields["severity"] == "notice"
    assert rec.fields["sd"] == {"exampleSDID@32473": {"iut": "3", "eventSource": "Application"},
                                "meta": {"x": 'a"b'}}
    assert rec.fields["pid"] == "123" and rec.fields["msgid"] == "ID47"
    assert rec.fields["sender"] == "10.0.0.9"
    assert rec.message == "upstream timed out"
    assert rec.ts == NOW + 123


def test_rfc3164_as_rsyslog_forwards_it() -> None:
    rec = parse_message(b"<11>Nov 26 14:05:06 db-1 postgres[42]: could not write block", sender="10.0.0.2",
                        now_ms=NOW, tz=UTC)
    assert (rec.server, rec.service, rec.level) == ("db-1", "postgres", LogLevel.ERROR)
    assert (rec.fields["facility"], rec.fields["severity"]) == ("user", "err")
    assert rec.ts == NOW
    assert rec.message == "could not write block"


def test_missing_or_unusable_hostname_falls_back_to_the_sender_address() -> None:
    nil = parse_message(b"<14>1 - - app - - - hello", sender="::ffff:192.0.2.5", now_ms=NOW)
    assert nil.server == "192.0.2.5" and nil.ts == NOW and nil.message == "hello"
    odd = parse_message(b"<14>1 2025-11-26T14:05:06Z h\xc3\xa9llo! app - - - hi", sender="::1", now_ms=NOW)
    assert odd.server == "::1"


def test_no_pri_is_user_notice_and_severity_maps_to_levels() -> None:
    rec = parse_message(b"just some text", sender="127.0.0.1", now_ms=NOW)
    assert (rec.fields["facility"], rec.fields["severity"], rec.level) == ("user", "notice", LogLevel.INFO)
    levels = [parse_message(f"<{8 + sev}>1 - h a - - - m".encode(), sender="h", now_ms=NOW).level for sev in range(8)]
    assert levels == [LogLevel.CRITICAL] * 3 + [LogLevel.ERROR, LogLevel.WARN, LogLevel.INFO, LogLevel.INFO,
                                               LogLevel.DEBUG]


def test_server_for_address() -> None:
    assert server_for_address("::ffff:10.1.2.3") == "10.1.2.3"
    assert server_for_address("127.0.0.1") == "127.0.0.1"


def test_octet_counting_and_newline_framing_mixed_and_split_anywhere() -> None:
    stream = b"11 <13>1 a b c4 <14>xy\n<15>line two\r\n\n3 abc"
    expected = [(b"<13>1 a b c", False), (b"<14>", False), (b"xy", False), (b"<15>line two", False), (b"abc", False)]
    # fed whole
    assert StreamFramer().feed(stream) == expected
    # fed one byte at a time
    framer = StreamFramer()
    got: list[tuple[bytes, bool]] = []
    for i in range(len(stream)):
        got.extend(framer.feed(stream[i:i + 1]))
    assert got == expected
    assert framer.buffered == 0


def test_over_long_messages_are_cut_and_flagged_and_memory_stays_bounded() -> None:
    framer = StreamFramer(max_bytes=8)
    out = framer.feed(b"20 abcdefghijklmnopqrst")
    assert out == [(b"abcdefgh", True)]
    out = framer.feed(b"0123456789" * 5)  # a newline-framed line with no end yet: cut, rest skipped
    assert out == [(b"01234567", True)] and framer.buffered == 0
    out = framer.feed(b"still the same line\nnext\n")
    assert out == [(b"next", False)]
    # a length that is not followed by a space is text
    assert StreamFramer().feed(b"12abc\n") == [(b"12abc", False)]
    assert StreamFramer().feed(b"123456789012345 x\n") == [(b"123456789012345 x", False)]


@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b), max_size=20),
       st.integers(min_value=1, max_value=7))
def test_octet_counted_messages_survive_any_split(messages: list[bytes], chunk: int) -> None:
    stream = b"".join(b"%d %s" % (len(m), m) for m in messages)
    framer = StreamFramer(max_bytes=64)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got.extend(m for m, _ in framer.feed(stream[i:i + chunk]))
    assert got == messages


@given(st.binary(max_size=300))
def test_any_bytes_never_raise_and_stay_bounded(data: bytes) -> None:
    framer = StreamFramer(max_bytes=32)
    for m, _ in framer.feed(data):
        assert len(m) <= 32
        parse_message(m, sender="127.0.0.1", now_ms=NOW)
    assert framer.buffered <= 32 + 12
