"""Following log files like `tail -F`, on real files: append, partial lines, rotation, truncation, restart
with saved offsets, files that appear later, unreadable paths, overlong lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest

from openmanager.core.errors import ConfigError
from openmanager.core.logparse import MAX_LINE_BYTES
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.sources import logfile
from openmanager.sources.logfile import LogFileSource, LogFileSpec, parse_log_file_spec

POLL = 0.02
TIMEOUT = 5.0


class RecordingSink:
    """A real sink: keeps every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[LogRecord]] = []

    def register(self, server: ServerInfo) -> None:
        raise AssertionError("the log file source registers no server")

    def samples(self, batch: Sequence[Sample]) -> None:
        raise AssertionError("the log file source sends no samples")

    def logs(self, records: Sequence[LogRecord]) -> None:
        self.batches.append(list(records))

    @property
    def records(self) -> list[LogRecord]:
        return [r for batch in self.batches for r in batch]

    def messages(self, server: str | None = None) -> list[str]:
        return [r.message for r in self.records if server is None or r.server == server]


async def until(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def source(tmp_path: Path, *paths: Path | LogFileSpec, **kw: object) -> LogFileSource:
    specs = [p if isinstance(p, LogFileSpec) else LogFileSpec(p, None) for p in paths]
    kw.setdefault("poll_s", POLL)
    return LogFileSource(specs, state_path=tmp_path / "state" / "offsets.json", **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(src: LogFileSource, sink: RecordingSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(src.run(sink))
    try:
        await asyncio.wait_for(src.ready.wait(), TIMEOUT)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with path.open("ab") as f:
        f.write(data)


def saved(tmp_path: Path) -> dict[str, dict[str, object]]:
    files: dict[str, dict[str, object]] = orjson.loads((tmp_path / "state" / "offsets.json").read_bytes())["files"]
    return files


async def sync_point(marker: Path, sink: RecordingSink, tag: str) -> None:
    """Append a line to `marker` — followed FIRST, so each poll reads it before the other files — and wait
    until it is delivered and its offset saved: by then a poll has read every file after every write made
    before this call, and the saved state is that poll's."""
    append(marker, f"sync {tag}\n")
    await until(lambda: f"sync {tag}" in sink.messages(), f"sync line {tag}")
    size = size_of(marker)
    await until(lambda: saved(marker.parent).get(str(marker), {}).get("offset") == size, "the offsets of that poll")


def size_of(path: Path) -> int:
    return path.stat().st_size


def size_ino(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_ino


def content(sink: RecordingSink) -> list[str]:
    """Delivered messages without the sync lines."""
    return [m for m in sink.messages() if not m.startswith("sync ")]


# -- specs ----------------------------------------------------------------------------------------------


def test_parse_log_file_spec() -> None:
    assert parse_log_file_spec("/var/log/syslog") == LogFileSpec(Path("/var/log/syslog"), None)
    assert parse_log_file_spec(" /var/log/app.log=web-1 ") == LogFileSpec(Path("/var/log/app.log"), "web-1")
    assert parse_log_file_spec("/data/a=b/app.log") == LogFileSpec(Path("/data/a=b/app.log"), None)
    assert parse_log_file_spec("/data/a=b.log=db") == LogFileSpec(Path("/data/a=b.log"), "db")
    assert parse_log_file_spec("~/app.log").path == Path.home() / "app.log"
    for bad in ("", "   ", "=web-1", "/var/log/x=", "/var/log/x=web 1"):
        with pytest.raises(ConfigError):
            parse_log_file_spec(bad)


def test_same_path_twice_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LogFileSource([LogFileSpec(tmp_path / "a.log", None), LogFileSpec(tmp_path / "x" / ".." / "a.log", "s")],
                      state_path=tmp_path / "s.json")


# -- following ----------------------------------------------------------------------------------------------


async def test_existing_content_is_skipped_and_appended_lines_are_delivered(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.write_text("old 1\nold 2\n")
    sink = RecordingSink()
    async with running(source(tmp_path, log_path), sink):
        append(log_path, "new 1\nERROR new 2\n")
        await until(lambda: len(sink.records) >= 2, "two lines")
        append(log_path, '{"level": "warn", "msg": "new 3", "req": 7}\n')
        await until(lambda: len(sink.records) >= 3, "three lines")
    assert sink.messages() == ["new 1", "ERROR new 2", "new 3"]
    hostname = socket.gethostname() or "localhost"
    assert {r.server for r in sink.records} == {hostname}
    assert {r.service for r in sink.records} == {"app"}
    assert [r.level for r in sink.records] == [LogLevel.INFO, LogLevel.ERROR, LogLevel.WARN]
    assert sink.records[2].fields == {"req": 7}
    assert saved(tmp_path)[str(log_path)]["offset"] == log_path.stat().st_size


async def test_servers_per_spec_default_server_and_service(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.touch()
    b.touch()
    sink = RecordingSink()
    src = source(tmp_path, LogFileSpec(a, "web-7"), LogFileSpec(b, None), default_server="box", service="svc")
    async with running(src, sink):
        append(a, "from a\n")
        append(b, "from b\n")
        await until(lambda: len(sink.records) >= 2, "both lines")
    assert sorted((r.server, r.message, r.service) for r in sink.records) == [
        ("box", "from b", "svc"), ("web-7", "from a", "svc")]


async def test_unfinished_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    marker, log_path = tmp_path / "marker.log", tmp_path / "app.log"
    log_path.touch()
    marker.touch()
    sink = RecordingSink()
    async with running(source(tmp_path, marker, log_path), sink):
        append(log_path, "first\nsec")
        await sync_point(marker, sink, "1")
        assert content(sink) == ["first"]
        assert saved(tmp_path)[str(log_path)]["offset"] == len("first\n")  # the partial is not committed
        append(log_path, "ond\nthird")
        await until(lambda: "second" in sink.messages(), "the completed line")
        await sync_point(marker, sink, "2")
        assert saved(tmp_path)[str(log_path)]["offset"] == len("first\nsecond\n")
    assert content(sink) == ["first", "second"]


async def test_start_at_the_end_keeps_an_unfinished_last_line(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.write_text("old line\nhalf a li")
    sink = RecordingSink()
    async with running(source(tmp_path, log_path), sink):
        append(log_path, "ne\nnext\n")
        await until(lambda: len(sink.records) >= 2, "two lines")
    assert sink.messages() == ["half a line", "next"]


async def test_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    log_path = tmp_path / "later" / "app.log"
    sink = RecordingSink()
    async with running(source(tmp_path, log_path), sink):
        assert saved(tmp_path)[str(log_path)] == {"dev": None, "ino": None, "offset": 0}
        log_path.parent.mkdir()
        log_path.write_text("one\ntwo\n")
        await until(lambda: len(sink.records) >= 2, "both lines")
        append(log_path, "three\n")
        await until(lambda: len(sink.records) >= 3, "three lines")
    assert sink.messages() == ["one", "two", "three"]


async def test_rotation_by_rename_and_new_file(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.touch()
    sink = RecordingSink()
    src = source(tmp_path, log_path)
    src.rotate_grace_s = 0.1
    async with running(src, sink):
        append(log_path, "1\n2\n")
        await until(lambda: len(sink.records) >= 2, "lines before rotation")
        with log_path.open("ab") as writer:  # a writer that keeps its file open across the rotation
            writer.write(b"3\n")
            writer.flush()
            log_path.rename(tmp_path / "app.log.1")
            log_path.write_text("6\n7\n")
            inode = size_ino(log_path)[1]
            await until(lambda: saved(tmp_path)[str(log_path)]["ino"] == inode, "the rotation noticed")
            writer.write(b"4\n5 unfinished")  # the old file's writer has not reopened yet
            writer.flush()
        await until(lambda: len(sink.records) >= 7, "every line")
        append(log_path, "8\n")
        await until(lambda: len(sink.records) >= 8, "a line after rotation")
        await until(lambda: "previous" not in saved(tmp_path)[str(log_path)], "the old file to be finished")
    assert sorted(sink.messages()) == ["1", "2", "3", "4", "5 unfinished", "6", "7", "8"]
    old_order = [m for m in sink.messages() if m in ("1", "2", "3", "4", "5 unfinished")]
    assert old_order == ["1", "2", "3", "4", "5 unfinished"]
    assert sink.messages()[-1] == "8"
    entry = saved(tmp_path)[str(log_path)]
    assert (entry["ino"], entry["offset"]) == (log_path.stat().st_ino, log_path.stat().st_size)


async def test_many_rotations_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.touch()
    sink = RecordingSink()
    src = source(tmp_path, log_path)
    src.rotate_grace_s = 0.2
    total = 600
    async with running(src, sink):
        writer = log_path.open("ab")
        try:
            for i in range(total):
                writer.write(f"line {i}\n".encode())
                writer.flush()
                if i % 97 == 96:  # logrotate's "create" mode: rename, new file, the writer reopens
                    os.replace(log_path, tmp_path / f"app.log.{i}")
                    new_writer = log_path.open("ab")
                    inode = size_ino(log_path)[1]
                    # polling sees one rotation per poll (a file rotated away twice between two polls is
                    # never seen, as with tail -F); wait until this one is noticed
                    await until(lambda ino=inode: saved(tmp_path)[str(log_path)]["ino"] == ino, "the rotation noticed")
                    writer.write(b"late line " + str(i).encode() + b"\n")  # the old file gets one more line
                    writer.close()
                    writer = new_writer
                elif i % 25 == 0:
                    await asyncio.sleep(0)  # let polls interleave with the writes
        finally:
            writer.close()
        await until(lambda: len(sink.records) >= total + total // 97, "every line")
        await until(lambda: "previous" not in saved(tmp_path)[str(log_path)], "the old files finished")
    lines = [int(m.split()[1]) for m in sink.messages() if m.startswith("line ")]
    late = [int(m.split()[2]) for m in sink.messages() if m.startswith("late line ")]
    assert lines == list(range(total))  # every line once, in order
    assert late == [i for i in range(total) if i % 97 == 96]


async def test_file_moved_away_and_back_is_not_read_twice(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.touch()
    sink = RecordingSink()
    async with running(source(tmp_path, log_path), sink):
        append(log_path, "1\n2\n")
        await until(lambda: len(sink.records) >= 2, "two lines")
        log_path.rename(tmp_path / "app.log.tmp")
        await until(lambda: saved(tmp_path)[str(log_path)]["ino"] is None, "the file noticed gone")
        (tmp_path / "app.log.tmp").rename(log_path)
        append(log_path, "3\n")
        await until(lambda: len(sink.records) >= 3, "the next line")
        append(log_path, "4\n")
        await until(lambda: len(sink.records) >= 4, "the line after")
    assert sink.messages() == ["1", "2", "3", "4"]


async def test_truncation_restarts_from_the_beginning(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.touch()
    sink = RecordingSink()
    async with running(source(tmp_path, log_path), sink):
        append(log_path, "aaaaaaaaaa\nbbbbbbbbbb\n")
        await until(lambda: len(sink.records) >= 2, "first lines")
        with log_path.open("r+b") as f:  # copytruncate: same file, emptied
            f.truncate(0)
        append(log_path, "c\n")
        await until(lambda: len(sink.records) >= 3, "the line after truncation")
        append(log_path, "d\n")
        await until(lambda: len(sink.records) >= 4, "the next line")
    assert sink.messages() == ["aaaaaaaaaa", "bbbbbbbbbb", "c", "d"]


async def test_overlong_line_is_cut_and_memory_stays_bounded(tmp_path: Path) -> None:
    marker, log_path = tmp_path / "marker.log", tmp_path / "app.log"
    log_path.touch()
    marker.touch()
    sink = RecordingSink()
    src = source(tmp_path, marker, log_path)
    async with running(src, sink):
        append(log_path, "ERROR " + "x" * (8 * MAX_LINE_BYTES))  # no newline yet: must not be held whole
        await sync_point(marker, sink, "1")
        reader = src._followers[1].current  # white-box: how much of the unfinished line is held
        assert reader is not None
        held = len(reader.buf) + len(reader.head or b"")
        assert held <= 2 * MAX_LINE_BYTES + 64 * 1024
        assert saved(tmp_path)[str(log_path)]["offset"] == 0
        append(log_path, "y" * MAX_LINE_BYTES + "\nshort\n")
        await until(lambda: len(content(sink)) >= 2, "both lines")
    long, short = [r for r in sink.records if not r.message.startswith("sync ")]
    assert long.fields == {"truncated": True}
    assert long.message.startswith("ERROR xxx") and len(long.message.encode()) <= MAX_LINE_BYTES
    assert long.level is LogLevel.ERROR
    assert (short.message, short.fields) == ("short", {})
    assert saved(tmp_path)[str(log_path)]["offset"] == log_path.stat().st_size


async def test_unreadable_path_is_reported_once_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker, log_path = tmp_path / "marker.log", tmp_path / "app.log"
    log_path.mkdir()  # a directory where the file should be: cannot be followed
    marker.touch()
    sink = RecordingSink()
    caplog.set_level(logging.INFO, logger="openmanager.sources.logfile")
    async with running(source(tmp_path, marker, log_path), sink) as task:
        for i in range(3):
            await sync_point(marker, sink, str(i))
        assert not task.done()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and str(log_path) in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        log_path.rmdir()
        log_path.write_text("now a file\n")
        await until(lambda: "now a file" in sink.messages(), "the line once readable")
    assert any("readable again" in r.getMessage() for r in caplog.records)


async def test_permission_denied_then_granted_resumes_where_the_file_ended_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the tests may run as root, which no file mode stops: deny at the one place the source opens files
    marker, log_path = tmp_path / "marker.log", tmp_path / "app.log"
    marker.touch()
    log_path.write_text("old content\n")
    denied = True
    real_open = logfile._open_regular

    def open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
        if denied and path == log_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(logfile, "_open_regular", open_regular)
    caplog.set_level(logging.INFO, logger="openmanager.sources.logfile")
    sink = RecordingSink()
    async with running(source(tmp_path, marker, log_path), sink):
        append(log_path, "written while denied\n")
        for i in range(3):
            await sync_point(marker, sink, str(i))
        assert content(sink) == []
        denied = False
        await until(lambda: content(sink) == ["written while denied"], "the line once readable")
        append(log_path, "later\n")
        await until(lambda: len(content(sink)) >= 2, "a later line")
    assert content(sink) == ["written while denied", "later"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Permission denied" in warnings[0]


async def test_fifo_is_not_opened(tmp_path: Path) -> None:
    marker, fifo = tmp_path / "marker.log", tmp_path / "pipe.log"
    os.mkfifo(fifo)  # opening it for reading would block the worker thread forever
    marker.touch()
    sink = RecordingSink()
    async with running(source(tmp_path, marker, fifo), sink):
        await sync_point(marker, sink, "1")
        await sync_point(marker, sink, "2")
    assert sink.messages() == ["sync 1", "sync 2"]


# -- offsets and restarts ---------------------------------------------------------------------------------


async def test_restart_neither_duplicates_nor_skips(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.write_text("before the first start\n")
    first = RecordingSink()
    async with running(source(tmp_path, log_path), first):
        append(log_path, "1\n2\n")
        await until(lambda: len(first.records) >= 2, "two lines")
    assert first.messages() == ["1", "2"]
    append(log_path, "3 while stopped\n4 while stopped\n5 unfin")
    second = RecordingSink()
    async with running(source(tmp_path, log_path), second):
        await until(lambda: len(second.records) >= 2, "the lines written while stopped")
        append(log_path, "ished\n")
        await until(lambda: len(second.records) >= 3, "the completed line")
    assert second.messages() == ["3 while stopped", "4 while stopped", "5 unfinished"]
    third = RecordingSink()
    async with running(source(tmp_path, log_path), third):
        append(log_path, "6\n")
        await until(lambda: len(third.records) >= 1, "a new line")
    assert third.messages() == ["6"]


async def test_rotation_while_stopped_finishes_the_old_file_first(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.touch()
    first = RecordingSink()
    async with running(source(tmp_path, log_path), first):
        append(log_path, "1\n")
        await until(lambda: len(first.records) >= 1, "one line")
    append(log_path, "2 old file\n")
    log_path.rename(tmp_path / "app.log.1")
    log_path.write_text("3 new file\n")
    second = RecordingSink()
    async with running(source(tmp_path, log_path), second):
        await until(lambda: len(second.records) >= 2, "both files")
    assert second.messages() == ["2 old file", "3 new file"]


async def test_file_rewritten_in_place_while_stopped_is_read_from_the_start(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.touch()
    first = RecordingSink()
    async with running(source(tmp_path, log_path), first):
        append(log_path, "original line one\n")
        await until(lambda: len(first.records) >= 1, "one line")
    inode = log_path.stat().st_ino
    with log_path.open("r+b") as f:  # same inode, new content longer than the saved offset
        f.truncate(0)
        f.write(b"replacement line number one\nreplacement two\n")
    assert log_path.stat().st_ino == inode
    second = RecordingSink()
    async with running(source(tmp_path, log_path), second):
        await until(lambda: len(second.records) >= 2, "the rewritten file")
    assert second.messages() == ["replacement line number one", "replacement two"]


async def test_offsets_are_saved_only_after_delivery(tmp_path: Path) -> None:
    class FailingSink(RecordingSink):
        def logs(self, records: Sequence[LogRecord]) -> None:
            raise RuntimeError("sink broke")

    log_path = tmp_path / "app.log"
    log_path.write_text("old\n")
    src = source(tmp_path, log_path)
    task = asyncio.create_task(src.run(FailingSink()))
    await asyncio.wait_for(src.ready.wait(), TIMEOUT)
    start = saved(tmp_path)[str(log_path)]["offset"]
    assert start == len("old\n")
    append(log_path, "never delivered\n")
    with pytest.raises(RuntimeError, match="sink broke"):
        await asyncio.wait_for(task, TIMEOUT)
    assert saved(tmp_path)[str(log_path)]["offset"] == start
    sink = RecordingSink()
    async with running(source(tmp_path, log_path), sink):
        await until(lambda: len(sink.records) >= 1, "the undelivered line")
    assert sink.messages() == ["never delivered"]


async def test_corrupt_state_file_starts_afresh(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.write_text("old\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "offsets.json").write_text("{not json")
    sink = RecordingSink()
    async with running(source(tmp_path, log_path), sink):
        append(log_path, "new\n")
        await until(lambda: len(sink.records) >= 1, "a line")
    assert sink.messages() == ["new"]
    assert saved(tmp_path)[str(log_path)]["offset"] == log_path.stat().st_size


async def test_batches_are_oldest_first_across_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.touch()
    b.touch()
    async with running(source(tmp_path, a, b), RecordingSink()):
        pass  # positions saved: both files at their (empty) end
    append(a, '{"ts": 3000, "msg": "a3"}\n{"ts": 1000, "msg": "a1"}\n')
    append(b, '{"ts": 2000, "msg": "b2"}\n{"ts": 4000, "msg": "b4"}\n')
    sink = RecordingSink()
    async with running(source(tmp_path, a, b), sink):  # the first poll reads both files
        await until(lambda: len(sink.records) >= 4, "four lines")
    assert len(sink.batches) == 1
    # merged by time while each file keeps its own order (a3 before a1 although it is later)
    assert sink.messages() == ["b2", "a3", "a1", "b4"]
