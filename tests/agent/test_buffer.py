"""The agent's disk buffer: order, bounds, removal only by ack, and what survives a reopen."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from openmanager.agent.buffer import LOG, SAMPLE, DiskBuffer


def body(i: int, size: int = 10) -> bytes:
    text = f"item-{i}-"
    return (text + "x" * max(0, size - len(text))).encode()


def test_items_come_back_in_order_with_increasing_seqs(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.db") as buf:
        assert buf.append(SAMPLE, [body(0), body(1)]) == 2
        assert buf.append(LOG, [body(2)]) == 3
        assert buf.append(SAMPLE, [body(3)]) == 4
        items = buf.read(after=0, max_items=100)
        assert [i.seq for i in items] == [1, 2, 3, 4]
        assert [i.kind for i in items] == [SAMPLE, SAMPLE, LOG, SAMPLE]
        assert [i.body for i in items] == [body(0), body(1), body(2), body(3)]
        assert [i.seq for i in buf.read(after=2, max_items=100)] == [3, 4]
        assert buf.read(after=4, max_items=100) == []
        assert buf.pending == 4
        assert buf.first_seq() == 1 and buf.last_seq() == 4


def test_read_respects_item_and_byte_limits_but_returns_at_least_one(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.db") as buf:
        buf.append(SAMPLE, [body(i, 100) for i in range(10)])
        assert [i.seq for i in buf.read(after=0, max_items=3)] == [1, 2, 3]
        # 100 bytes + 1 separator each: 250 bytes fit two
        assert [i.seq for i in buf.read(after=0, max_items=10, max_bytes=250)] == [1, 2]
        assert [i.seq for i in buf.read(after=5, max_items=10, max_bytes=10)] == [6]
        assert buf.pending == 10  # reading removes nothing


def test_ack_removes_up_to_seq_and_nothing_else(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.db") as buf:
        buf.append(SAMPLE, [body(i) for i in range(5)])
        assert buf.ack(3) == 3
        assert [i.seq for i in buf.items()] == [4, 5]
        assert buf.pending == 2 and buf.pending_bytes == 2 * len(body(0))
        assert buf.ack(3) == 0  # again: nothing left to remove
        assert buf.ack(10) == 2
        assert buf.pending == 0 and buf.first_seq() == 0
        stats = buf.stats()
        assert stats.acked == 5 and stats.appended == {SAMPLE: 5, LOG: 0} and stats.dropped == {SAMPLE: 0, LOG: 0}


def test_full_buffer_drops_the_oldest_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    with DiskBuffer(tmp_path / "b.db", max_bytes=1000, clock=lambda: clock[0]) as buf:
        caplog.set_level(logging.WARNING, logger="openmanager.agent.buffer")
        buf.append(LOG, [body(i, 100) for i in range(5)])  # seqs 1-5, 500 bytes
        buf.append(SAMPLE, [body(i, 100) for i in range(5, 15)])  # seqs 6-15: 1500 bytes in all
        assert buf.pending_bytes <= 1000
        assert [i.seq for i in buf.items()] == list(range(6, 16))  # the newest ten stay
        stats = buf.stats()
        assert stats.dropped == {LOG: 5, SAMPLE: 0}
        assert stats.appended == {LOG: 5, SAMPLE: 10}
        warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(warnings) == 1 and "5 oldest" in warnings[0].getMessage()
        buf.append(SAMPLE, [body(99, 100)])  # one more drop within warn_every_s: counted, not logged
        assert sum(buf.stats().dropped.values()) == 6
        assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1
        clock[0] = 60.0
        buf.append(SAMPLE, [body(100, 100)])
        messages = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(messages) == 2 and "2 oldest" in messages[1] and "7 dropped in all" in messages[1]


def test_item_count_bound_and_oversized_items(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.db", max_bytes=500, max_items=3) as buf:
        buf.append(SAMPLE, [body(i) for i in range(5)])
        assert [i.seq for i in buf.items()] == [3, 4, 5]
        assert buf.append(LOG, [body(9, 501)]) == 0  # larger than the whole buffer: dropped at once
        assert [i.seq for i in buf.items()] == [3, 4, 5]
        assert buf.stats().dropped == {SAMPLE: 2, LOG: 1}


def test_everything_survives_a_reopen_and_seqs_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "b.db"
    buf = DiskBuffer(path)
    buf.append(SAMPLE, [body(i) for i in range(3)])
    buf.append(LOG, [body(3)])
    buf.ack(1)
    ident = buf.id
    buf.close()

    buf = DiskBuffer(path)
    try:
        assert buf.id == ident
        assert [(i.seq, i.kind, i.body) for i in buf.items()] == [
            (2, SAMPLE, body(1)), (3, SAMPLE, body(2)), (4, LOG, body(3))]
        assert buf.pending == 3 and buf.pending_bytes == 3 * len(body(0))
        buf.ack(4)  # empty now; the next seq must still be 5
        assert buf.append(SAMPLE, [body(4)]) == 5
        stats = buf.stats()
        assert stats.appended == {SAMPLE: 4, LOG: 1} and stats.acked == 4
    finally:
        buf.close()
    buf = DiskBuffer(path)
    try:
        buf.ack(5)
    finally:
        buf.close()
    with DiskBuffer(path) as buf:
        assert buf.pending == 0 and buf.last_seq() == 5
        assert buf.append(LOG, [body(5)]) == 6


def test_a_new_file_has_a_new_id(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "a.db") as a, DiskBuffer(tmp_path / "b.db") as b:
        assert a.id != b.id and len(a.id) == 16


def test_file_size_stays_bounded_under_churn(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    sizes: list[int] = []
    with DiskBuffer(path, max_bytes=64 * 1024) as buf:
        for round_ in range(60):
            buf.append(LOG, [body(round_ * 100 + i, 1000) for i in range(100)])  # 100 KB per round: drops
            if round_ % 3 == 0:
                buf.ack(buf.last_seq() - 10)
            sizes.append(path.stat().st_size)
        assert buf.pending_bytes <= 64 * 1024
        wal = path.with_name("b.db-wal").stat().st_size
    # 6 MB went through; the database file stays a small multiple of the bound (free pages are reused) and
    # the write-ahead log is reset at each checkpoint (about 4 MB).
    assert max(sizes) < 4 * 64 * 1024, sizes
    assert sizes[-1] <= max(sizes[: len(sizes) // 2])  # no growth in the second half
    assert wal < 5 * 1024 * 1024


def test_a_read_only_view_sees_what_the_writer_wrote(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with DiskBuffer(path) as writer:
        writer.append(SAMPLE, [body(1)])
        with DiskBuffer(path, readonly=True) as view:
            assert view.id == writer.id
            assert [i.body for i in view.items()] == [body(1)]
            writer.append(LOG, [body(2)])
            assert [i.seq for i in view.items()] == [1, 2]
            assert view.stats().appended == {SAMPLE: 1, LOG: 1} and view.stats().pending == 2
            with pytest.raises(sqlite3.Error):
                view.append(SAMPLE, [body(3)])
        assert writer.pending == 2


def test_discard_removes_only_the_given_items_and_counts_them(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.db") as buf:
        buf.append(SAMPLE, [body(i) for i in range(3)])
        buf.append(LOG, [body(3, 50)])
        items = buf.items()
        assert buf.discard([items[1], items[3]]) == 2
        assert buf.discard([items[1]]) == 0
        assert [i.seq for i in buf.items()] == [1, 3]
        assert buf.pending == 2 and buf.pending_bytes == 2 * len(body(0))
        assert buf.stats().dropped == {SAMPLE: 1, LOG: 1}
