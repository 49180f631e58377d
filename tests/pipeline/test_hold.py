"""Attaching with `hold` before an awaited replay: live events published meanwhile are held, then released
after the replay without the ones it already covered (the Redis broker's replay suspends)."""

from __future__ import annotations

import orjson

from openmanager.broker.memory import MemoryBroker
from openmanager.core.filters import parse_filter
from openmanager.core.history import FleetHistory
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.session import Session
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats


def make() -> tuple[MemoryBroker, FanOut, HubStats]:
    state = FleetState(StatusPolicy(), FleetHistory(10), tick_ms=1000)
    broker = MemoryBroker()
    stats = HubStats()
    return broker, FanOut(broker, state, stats), stats


def received(session: Session) -> list[int]:
    out = []
    while len(session.queue):
        frame = session.queue.pop()
        assert isinstance(frame, str)
        out.append(orjson.loads(frame)["data"]["records"][0]["n"])
    return out


async def test_events_published_during_a_replay_are_held_then_released_without_duplicates() -> None:
    broker, fanout, stats = make()
    events = [await broker.publish("logs", {"records": [{"n": i}]}) for i in range(3)]
    session = Session("admin", "ws", "", stats)
    shape = fanout.shape_for("logs", parse_filter("logs", {}))
    fanout.attach(session, shape, hold=True)
    since = events[0].cursor
    # while the (networked) replay is read, two more events arrive and one of them is also in the replay
    live = [await broker.publish("logs", {"records": [{"n": i}]}) for i in (3, 4)]
    assert received(session) == []  # held, not sent before the replay
    replay = await broker.replay("logs", since)
    assert replay is not None and [e.data["records"][0]["n"] for e in replay] == [1, 2, 3, 4]
    replay = replay[:3]  # the replay was read before event 4 arrived
    fanout.release(session, shape, replay[-1].cursor, replay)
    assert received(session) == [1, 2, 3, 4]  # replay, then the held events not in it; each once
    assert session.held == {}
    await broker.publish("logs", {"records": [{"n": 5}]})
    assert received(session) == [5]
    assert live[-1].seq == 5


async def test_a_snapshot_drops_held_events_it_already_reflects() -> None:
    broker, fanout, stats = make()
    session = Session("admin", "ws", "", stats)
    shape = fanout.shape_for("logs", parse_filter("logs", {}))
    fanout.attach(session, shape, hold=True)
    for i in range(3):
        await broker.publish("logs", {"records": [{"n": i}]})
    head = broker.head("logs")  # not recovered: what follows the snapshot's position is sent
    await broker.publish("logs", {"records": [{"n": 3}]})
    fanout.release(session, shape, head)
    assert received(session) == [3]


async def test_detach_forgets_held_events() -> None:
    broker, fanout, stats = make()
    session = Session("admin", "ws", "", stats)
    shape = fanout.shape_for("logs", parse_filter("logs", {}))
    fanout.attach(session, shape, hold=True)
    await broker.publish("logs", {"records": [{"n": 0}]})
    fanout.detach(session, shape)
    assert session.held == {} and received(session) == []
