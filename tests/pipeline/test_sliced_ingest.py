"""A batch larger than `INGEST_SLICE` (a thousand simulated servers' tick) is taken in by a task, a slice
per turn of the event loop, and still becomes one `metrics` event; batches stay in order, and
`barrier` covers what is still being taken in."""

from __future__ import annotations

import asyncio

from openmanager.broker.base import Event
from openmanager.broker.memory import MemoryBroker
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.pipeline import INGEST_SLICE, Pipeline
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats

N = INGEST_SLICE * 4 + 7


async def test_a_large_batch_is_taken_in_slices_as_one_event_in_order() -> None:
    state = FleetState(StatusPolicy(), FleetHistory(100), tick_ms=1000)
    broker, stats = MemoryBroker(), HubStats()
    pipeline = Pipeline(state, broker, stats)
    events: list[Event] = []
    broker.listen("metrics", events.append)
    pipeline.start()
    try:
        for i in range(N):
            pipeline.register(ServerInfo(f"s{i:04d}", f"s{i:04d}"))
        turns = 0

        def applied(server: str) -> bool:
            return state.servers[server].ts > 0

        def count_turns() -> None:  # a callback each turn of the loop while the batch is taken in
            nonlocal turns
            turns += 1
            if not (applied("s0000") and applied(f"s{N - 1:04d}")):
                asyncio.get_running_loop().call_soon(count_turns)

        big = [Sample(f"s{i:04d}", 1000, {"cpu": 50.0, "memory": 150.0}) for i in range(N)]
        big.append(Sample("s0001", 900, {"cpu": 1.0}))  # older than the batch's other sample: loses
        big.append(Sample("s0002", 1000, {"nonsense": 1.0}))  # invalid: does not replace the valid one
        asyncio.get_running_loop().call_soon(count_turns)
        pipeline.samples(big)
        pipeline.samples([Sample("s0003", 2000, {"cpu": 99.0})])  # after the big one, though small
        assert not applied("s0003")  # queued behind the big batch, not applied ahead of it
        async with asyncio.timeout(5):
            await pipeline.barrier()  # both batches are in and published
        assert len(events) == 2
        first, second = events[0].data, events[1].data
        assert len(first["servers"]) == N and first["ts"] == 1000
        assert first["servers"]["s0001"]["cpu"] == 50.0 and first["servers"]["s0002"]["cpu"] == 50.0
        assert first["servers"]["s0000"]["memory"] == 100.0  # cleaned (clamped)
        assert list(second["servers"]) == ["s0003"] and second["servers"]["s0003"]["cpu"] == 99.0
        assert turns >= 5  # the loop ran other callbacks in between: at least one turn per slice
        assert stats.ingest_samples == N + 1
        pipeline.samples([Sample("s0004", 3000, {"cpu": 5.0})])  # nothing deferred: applied at once
        assert applied("s0004")
    finally:
        await pipeline.stop()
