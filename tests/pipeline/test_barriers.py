"""The barriers a receiver awaits before it answers a write (`Pipeline.barrier`, `LogWriter.barrier`), and
`FleetState.touch` for servers that send only logs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from openmanager.broker.memory import HistoryLimits, MemoryBroker
from openmanager.config import Settings
from openmanager.core.history import FleetHistory
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo, Status
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.pipeline import Pipeline
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats


async def test_records_are_stored_when_both_barriers_pass() -> None:
    state = FleetState(Settings.load({}, env={}).status_policy(), FleetHistory(8))
    broker = MemoryBroker(HistoryLimits(60_000, 1000, 1 << 20))
    pipeline = Pipeline(state, broker, HubStats())
    stored: list[Mapping[str, Any]] = []

    async def write(batch: Sequence[Mapping[str, Any]]) -> None:
        await asyncio.sleep(0.01)
        stored.extend(batch)

    writer = LogWriter(interval_s=30.0)  # would wait 30 s: the barrier asks for a flush now
    writer.start(write)
    broker.listen("logs", lambda event: writer.offer(event.data["records"]))
    await broker.start()
    pipeline.start()
    try:
        pipeline.logs([LogRecord(1000, "a", LogLevel.INFO, "s", "one"),
                       LogRecord(1001, "a", LogLevel.INFO, "s", "two")])
        async with asyncio.timeout(5):
            await pipeline.barrier()
            assert await writer.barrier() is True
        assert [r["message"] for r in stored] == ["one", "two"]
        assert await writer.barrier() is True  # nothing pending: at once
    finally:
        await pipeline.stop()
        await writer.stop()
        await broker.close()


async def test_a_failed_write_fails_the_barrier() -> None:
    async def fail(batch: Sequence[Mapping[str, Any]]) -> None:
        raise OSError("disk full")

    writer = LogWriter(interval_s=30.0)
    writer.start(fail)
    try:
        writer.offer([{"server": "a", "message": "x"}])
        async with asyncio.timeout(5):
            assert await writer.barrier() is False
    finally:
        await writer.stop()


def test_touch_keeps_a_log_only_server_alive_and_leaves_sampled_ones_to_their_samples() -> None:
    now = [1000.0]
    state = FleetState(Settings.load({}, env={}).status_policy(), FleetHistory(8), tick_ms=1000, clock=lambda: now[0])
    assert state.touch("nobody") is None
    state.register(ServerInfo(id="logs-only", hostname="logs-only", source="syslog"))
    assert state.servers["logs-only"].status is Status.OFFLINE
    assert state.touch("logs-only") is True
    assert state.servers["logs-only"].status is Status.HEALTHY
    now[0] += 11  # past the offline limit (3 ticks or 10 s)
    assert [s.info.id for s in state.expire()] == ["logs-only"]
    assert state.touch("logs-only") is True
    state.apply(Sample("sampled", int(now[0] * 1000), {"cpu": 99.0}))
    assert state.touch("sampled") is False and state.servers["sampled"].status is Status.CRITICAL
