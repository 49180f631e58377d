"""The pipeline is the only writer of live state: a source's backlog (`backfill`) and a cluster's mirrored
samples (`mirror`) go through it too."""

from __future__ import annotations

import asyncio

from openmanager.broker.base import Event
from openmanager.broker.memory import MemoryBroker
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.pipeline import Pipeline
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats


async def test_a_backfill_goes_into_history_whole_and_onto_metrics_once() -> None:
    state = FleetState(StatusPolicy(), FleetHistory(100), tick_ms=1000)
    broker, stats = MemoryBroker(), HubStats()
    pipeline = Pipeline(state, broker, stats)
    events: list[Event] = []
    marks: list[Event] = []
    broker.listen("metrics", events.append)
    broker.listen("fleet", marks.append)
    pipeline.start()
    try:
        pipeline.register(ServerInfo("box", "box.local"))
        backlog = [Sample("box", 1000 + i * 1000, {"cpu": 10.0 * i, "memory": 150.0}) for i in range(5)]
        backlog.insert(2, Sample("box", 2500, {"nonsense": 1.0}))  # invalid: left out, counted by the caller
        applied = pipeline.backfill(backlog)
        assert [s.ts for s in applied] == [1000, 2000, 3000, 4000, 5000]
        assert all(s.values["memory"] == 100.0 for s in applied)  # cleaned (clamped) here, once
        ring = state.history.get("box")
        assert ring is not None and [ts for ts, _ in ring.points(0)] == [1000, 2000, 3000, 4000, 5000]
        pipeline.publish("fleet", {"mark": True})  # published in order: after whatever the backfill enqueued
        async with asyncio.timeout(5):
            while not marks:
                await asyncio.sleep(0.01)
        assert len(events) == 1 and events[0].data["ts"] == 5000
        assert events[0].data["servers"]["box"]["cpu"] == 40.0
        assert stats.ingest_samples == 5
        assert state.servers["box"].ts == 5000
    finally:
        await pipeline.stop()


def test_mirrored_samples_go_into_state_and_history() -> None:
    state = FleetState(StatusPolicy(), FleetHistory(100), tick_ms=1000)
    pipeline = Pipeline(state, MemoryBroker(), HubStats())
    state.register(ServerInfo("far", "far.local"))
    pipeline.mirror({"ts": 7000, "servers": {"far": {"cpu": 12.5, "status": "healthy"}}})
    assert state.servers["far"].ts == 7000 and state.servers["far"].values["cpu"] == 12.5
    ring = state.history.get("far")
    assert ring is not None and [ts for ts, _ in ring.points(0)] == [7000]
