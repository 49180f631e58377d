from openmanager.core.cursor import Cursor, parse_cursor
from openmanager.core.outbound import Conflated, OutboundQueue


def test_cursor_round_trip_and_malformed() -> None:
    c = Cursor("ab12", 42)
    assert str(c) == "ab12-42" and parse_cursor(str(c)) == c
    for bad in ("", "ab12", "ab12-", "-4", "AB-1", "ab 12-3", "ab-1-2", "ab-x", 5, None, "a" * 40 + "-1"):
        assert parse_cursor(bad) is None


def test_outbound_queue_bounds_by_count_and_bytes() -> None:
    q = OutboundQueue(max_messages=3, max_bytes=10)
    assert q.offer("aaaa") and q.offer("bbbb")
    assert not q.offer("ccc")  # 11 bytes would exceed 10
    assert len(q) == 2 and q.bytes == 8
    assert q.offer("cc") and not q.offer("")  # 3 messages reached
    assert q.pop() == "aaaa" and q.bytes == 6
    assert q.offer("d")
    assert [q.pop(), q.pop(), q.pop()] == ["bbbb", "cc", "d"] and q.bytes == 0


def test_conflated_update_merges_per_server_and_replaces_other_payloads() -> None:
    first = {"ts": 1, "servers": {"a": {"cpu": 1.0}, "b": {"cpu": 2.0}}}
    c = Conflated("s1", "e-1", first)
    c.merge("e-2", {"ts": 2, "servers": {"a": {"cpu": 3.0}}})
    c.merge("e-3", {"ts": 3, "servers": {"c": {"cpu": 4.0}}})
    assert c.cursor == "e-3" and c.merged == 2
    assert c.data == {"ts": 3, "servers": {"a": {"cpu": 3.0}, "b": {"cpu": 2.0}, "c": {"cpu": 4.0}}}
    assert first["servers"] == {"a": {"cpu": 1.0}, "b": {"cpu": 2.0}}  # the shared event is never mutated
    fleet = Conflated("s2", "e-1", {"ts": 1, "total": 5})
    fleet.merge("e-2", {"ts": 2, "total": 6})
    assert fleet.data == {"ts": 2, "total": 6}
