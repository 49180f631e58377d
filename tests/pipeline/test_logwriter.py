"""The batched log writer: flush by time and by size, drop-oldest when full, flush at stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from openmanager.core.model import LogLevel, LogRecord
from openmanager.pipeline.logwriter import LogWriter
from openmanager.store import Store
from openmanager.store.logs import LogStore


def records(lo: int, hi: int) -> list[dict[str, Any]]:
    return [LogRecord(1_000 + i, "s-1", LogLevel.INFO, "svc", f"line {i}").to_dict() for i in range(lo, hi)]


class Sink:
    """A store stand-in: remembers batches; can be held closed, or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = 0
        self.entered = asyncio.Event()

    async def write(self, batch: Sequence[Mapping[str, Any]]) -> int:
        self.entered.set()
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("disk I/O error")
        self.batches.append([str(r["message"]) for r in batch])
        return len(batch)

    @property
    def lines(self) -> list[str]:
        return [m for b in self.batches for m in b]


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_flushes_on_the_interval() -> None:
    sink, writer = Sink(), LogWriter(batch_size=100, interval_s=0.05)
    writer.start(sink.write)
    try:
        writer.offer(records(0, 3))
        writer.offer(records(3, 5))
        await until(lambda: len(sink.lines) == 5)
        assert sink.lines == [f"line {i}" for i in range(5)]
        assert writer.written == 5 and writer.buffered == 0
    finally:
        await writer.stop()


async def test_a_full_batch_flushes_before_the_interval() -> None:
    sink, writer = Sink(), LogWriter(batch_size=10, interval_s=3600)
    writer.start(sink.write)
    try:
        writer.offer(records(0, 5))
        for _ in range(20):  # the writer gets every chance to run: under a batch, it waits for the interval
            await asyncio.sleep(0)
        assert sink.batches == [] and writer.buffered == 5
        writer.offer(records(5, 25))
        await until(lambda: writer.written == 25)
        assert [len(b) for b in sink.batches] == [10, 10, 5]  # woken by a full batch, it drains the buffer
        assert sink.lines == [f"line {i}" for i in range(25)]
    finally:
        await writer.stop()
    assert (writer.written, writer.dropped, writer.failed) == (25, 0, 0)


async def test_stop_finishes_the_batch_in_flight_and_flushes_the_rest() -> None:
    sink, writer = Sink(), LogWriter(batch_size=4, interval_s=3600)
    sink.gate.clear()
    writer.start(sink.write)
    writer.offer(records(0, 4))
    await until(sink.entered.is_set)  # batch 0..3 is being written
    writer.offer(records(4, 6))
    stopping = asyncio.create_task(writer.stop())
    await asyncio.sleep(0)
    sink.gate.set()
    await stopping
    assert sink.batches == [[f"line {i}" for i in range(4)], ["line 4", "line 5"]]
    assert (writer.written, writer.dropped) == (6, 0)


async def test_stop_gives_up_after_its_timeout_and_counts_what_is_lost() -> None:
    sink, writer = Sink(), LogWriter(batch_size=4, interval_s=3600)
    sink.gate.clear()  # the store never answers
    writer.start(sink.write)
    writer.offer(records(0, 6))
    await until(sink.entered.is_set)
    await writer.stop(timeout=0.1)
    assert sink.batches == []
    assert (writer.written, writer.dropped) == (0, 6)


async def test_a_slow_store_makes_it_drop_the_oldest_and_count_them(caplog: pytest.LogCaptureFixture) -> None:
    sink, writer = Sink(), LogWriter(max_buffer=10, batch_size=5, interval_s=3600)
    sink.gate.clear()  # the store hangs
    writer.start(sink.write)
    writer.offer(records(0, 5))  # a full batch: the writer takes it and waits on the store
    await until(sink.entered.is_set)
    assert writer.buffered == 0
    for i in range(5, 20, 3):  # offer never waits, however slow the store
        writer.offer(records(i, min(i + 3, 20)))
    assert writer.buffered == 10
    assert writer.dropped == 5
    assert "2 records dropped" in caplog.text  # the first overflow is reported at once, later ones rate-limited
    sink.gate.set()
    await writer.stop()
    assert "5 records dropped" in caplog.text  # the final count, at stop
    assert sink.lines == [f"line {i}" for i in [*range(5), *range(10, 20)]]
    assert (writer.written, writer.dropped) == (15, 5)


async def test_a_failed_batch_is_counted_and_the_next_ones_still_go_in(caplog: pytest.LogCaptureFixture) -> None:
    sink, writer = Sink(), LogWriter(batch_size=4, interval_s=0.02)
    sink.fail_next = 1
    writer.start(sink.write)
    writer.offer(records(0, 4))
    await until(lambda: writer.failed == 4)
    writer.offer(records(4, 6))
    await until(lambda: writer.written == 2)
    await writer.stop()
    assert sink.lines == ["line 4", "line 5"]
    assert "disk I/O error" in caplog.text


async def test_discard_forgets_one_servers_buffered_records() -> None:
    writer = LogWriter(batch_size=100, interval_s=3600)
    other = [dict(r, server="s-2") for r in records(10, 13)]
    writer.offer([*records(0, 3), *other])
    assert writer.discard("s-1") == 3
    sink = Sink()
    writer.start(sink.write)
    await writer.stop()
    assert sink.lines == ["line 10", "line 11", "line 12"]


async def test_counters_are_exported() -> None:
    sink, writer = Sink(), LogWriter(max_buffer=2, batch_size=100, interval_s=3600)
    registry = CollectorRegistry()
    registry.register(writer)
    writer.offer(records(0, 5))
    assert registry.get_sample_value("openmanager_log_records_dropped_total") == 3
    assert registry.get_sample_value("openmanager_log_writer_buffered") == 2
    writer.start(sink.write)
    await writer.stop()
    assert registry.get_sample_value("openmanager_log_records_stored_total") == 2


async def test_into_a_real_store(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'logs.db'}")
    try:
        logs = LogStore(store)
        writer = LogWriter(batch_size=50, interval_s=0.05)
        writer.start(logs.write)
        for i in range(0, 120, 7):
            writer.offer(records(i, min(i + 7, 120)))
        await until(lambda: writer.written == 120)
        writer.offer(records(120, 123))
        await writer.stop()
        got = await logs.search(limit=1000)
        assert [r["message"] for r in got] == [f"line {i}" for i in range(123)]
    finally:
        await store.close()
