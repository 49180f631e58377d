"""The fan-out asks a filter to render itself (`core.filters.TopicFilter`): a filter class it has never
heard of works as long as it has the protocol's members."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from openmanager.broker.memory import MemoryBroker
from openmanager.core.filters import FleetView
from openmanager.core.history import FleetHistory
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.session import Session
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats


class EvenOnly:
    """Keeps the records whose `n` is even."""

    key: tuple[object, ...] = ("logs", "even")
    trivial = False
    interval_ms = 0
    cost = 0
    server_ids = None

    def render(self, data: Mapping[str, Any], view: FleetView) -> dict[str, Any] | None:
        records = [r for r in data["records"] if r["n"] % 2 == 0]
        return {"records": records} if records else None

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        return data


async def test_a_filter_class_the_fanout_does_not_know_renders_itself() -> None:
    state = FleetState(StatusPolicy(), FleetHistory(10), tick_ms=1000)
    broker, stats = MemoryBroker(), HubStats()
    fanout = FanOut(broker, state, stats)
    session = Session("admin", "ws", "", stats)
    fanout.attach(session, fanout.shape_for("logs", EvenOnly()))
    for n in range(4):
        await broker.publish("logs", {"records": [{"n": n}, {"n": n + 10}] if n == 3 else [{"n": n}]})
    frames = []
    while len(session.queue):
        frame = session.queue.pop()
        assert isinstance(frame, str)
        frames.append([r["n"] for r in orjson.loads(frame)["data"]["records"]])
    assert frames == [[0], [2]]  # 1 and 3 (with 13) have no even record: nothing is sent for them
