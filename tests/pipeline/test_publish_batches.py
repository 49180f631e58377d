"""The publisher hands a networked broker what queued up while its last round trip ran, in one call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from openmanager.broker.base import Event
from openmanager.broker.redis import RedisBroker
from openmanager.config import Settings
from openmanager.core.history import FleetHistory
from openmanager.pipeline.pipeline import PUBLISH_BATCH, Pipeline
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats
from tests.services import delete_prefix, redis_url


async def test_events_queued_meanwhile_go_to_redis_in_few_round_trips_in_order() -> None:
    url, prefix = redis_url(), f"omtest-{uuid.uuid4().hex[:10]}"
    broker = RedisBroker(url, prefix=prefix, node="a", topics=["fleet", "logs"])
    calls: list[int] = []
    real = broker.publish_many

    async def counting(items: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any] | None]]) -> list[Event]:
        calls.append(len(items))
        return await real(items)

    broker.publish_many = counting  # type: ignore[method-assign]
    state = FleetState(Settings.load({}, env={}).status_policy(), FleetHistory(8))
    pipeline = Pipeline(state, broker, HubStats())
    seen: list[Event] = []
    handed: list[int] = []
    pipeline.on_publish = lambda topic, data: handed.append(int(data["n"]))
    await broker.start()
    broker.listen("fleet", seen.append)
    pipeline.start()
    try:
        n = PUBLISH_BATCH + 200
        for i in range(n):  # all queued before the publisher runs
            pipeline.publish("fleet", {"n": i})
        async with asyncio.timeout(10):
            await pipeline.barrier()
            while len(seen) < n:
                await asyncio.sleep(0.01)
        assert [e.data["n"] for e in seen] == list(range(n)) == handed
        assert max(calls) == PUBLISH_BATCH and sum(calls) == n and len(calls) <= 3
        assert pipeline.stats.events_published == n
    finally:
        await pipeline.stop()
        await broker.close()
        delete_prefix(url, prefix)
