"""The hub in-process: a failing source is disabled while the others run (and /readyz says so), one that
fails with a transient error is run again; ingest reaches the broker."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence
from pathlib import Path

import pytest

from openmanager.broker.base import Event
from openmanager.config import Settings
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.hub import Hub
from openmanager.root import Root
from openmanager.sources import runner as runner_module
from openmanager.sources.base import SourceSink


class BrokenSource:
    name = "broken"

    async def run(self, sink: SourceSink) -> None:
        raise RuntimeError("exporter unreachable")


class OneShotSource:
    """Emits a few ticks quickly, including an invalid sample and a log line."""

    name = "oneshot"

    async def run(self, sink: SourceSink) -> None:
        sink.register(ServerInfo("box-1", "box-1.local", role="web", source="oneshot"))
        for i in range(3):
            batch: Sequence[Sample] = [
                Sample("box-1", 1_000_000 + i * 1000, {"cpu": 50.0 + i, "memory": 150.0}),
                Sample("bad", 1_000_000, {"nonsense": 1.0}),
            ]
            sink.samples(batch)
            sink.logs([LogRecord(1_000_000 + i, "box-1", LogLevel.ERROR, "app", f"line {i}")])
            await asyncio.sleep(0.01)
        await asyncio.Event().wait()


async def test_failing_source_is_disabled_and_others_run(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path), "tick": 0.05}, env={})
    hub: Hub = Root.build(settings, admin_token="a-test-token", sources=[BrokenSource(), OneShotSource()]).hub
    metrics: list[Event] = []
    logs: list[Event] = []
    hub.broker.listen("metrics", metrics.append)
    hub.broker.listen("logs", logs.append)
    await hub.start()
    try:
        async with asyncio.timeout(5):
            while len(metrics) < 3 or len(logs) < 3:
                await asyncio.sleep(0.01)
        assert hub.source_status["broken"] == "failed: exporter unreachable"
        assert hub.source_status["oneshot"] == "running"
        assert hub.readiness() == (False, "sources: broken failed: exporter unreachable")  # not hidden
        sample = metrics[-1].data["servers"]["box-1"]
        assert sample["cpu"] == 52.0 and sample["memory"] == 100.0  # clamped
        assert all("bad" not in e.data["servers"] for e in metrics)  # invalid samples never published
        assert [r["message"] for e in logs for r in e.data["records"]] == ["line 0", "line 1", "line 2"]
        assert hub.state.servers["box-1"].info.role == "web"
    finally:
        await hub.stop()


async def test_not_ready_when_every_source_failed(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path)}, env={})
    hub: Hub = Root.build(settings, admin_token="a-test-token", sources=[BrokenSource()]).hub
    await hub.start()
    try:
        async with asyncio.timeout(5):
            while hub.source_status["broken"] == "running":
                await asyncio.sleep(0.01)
        ready, reason = hub.readiness()
        assert not ready and "exporter unreachable" in reason
    finally:
        await hub.stop()


class OutOfFilesSource:
    """Fails twice as psutil does when the process is out of file descriptors, then runs."""

    name = "flaky"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, sink: SourceSink) -> None:
        self.runs += 1
        if self.runs <= 2:
            raise OSError(errno.EMFILE, "Too many open files")
        sink.register(ServerInfo("box-2", "box-2.local", source="flaky"))
        while True:
            sink.samples([Sample("box-2", 1_000_000 + self.runs, {"cpu": 10.0})])
            await asyncio.sleep(0.05)


async def test_a_source_failing_with_a_transient_error_is_retried_and_readiness_tells(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "RETRY_FIRST_S", 0.3)
    settings = Settings.load({"data_dir": str(tmp_path), "tick": 0.05}, env={})
    source = OutOfFilesSource()
    hub: Hub = Root.build(settings, admin_token="a-test-token", sources=[source]).hub
    await hub.start()
    try:
        async with asyncio.timeout(5):
            while not hub.source_status["flaky"].startswith("retrying"):
                await asyncio.sleep(0.01)
        ready, reason = hub.readiness()
        assert not ready and "flaky retrying: [Errno 24] Too many open files" in reason, reason
        async with asyncio.timeout(10):
            while not (source.runs == 3 and hub.source_status["flaky"] == "running" and "box-2" in hub.state.servers):
                await asyncio.sleep(0.01)
        assert hub.readiness() == (True, "ready")
    finally:
        await hub.stop()
