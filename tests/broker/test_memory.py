from openmanager.broker.base import Event
from openmanager.broker.memory import HistoryLimits, MemoryBroker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_publish_listen_and_cursors() -> None:
    b = MemoryBroker()
    seen: list[Event] = []
    stop = b.listen("t", seen.append)
    e1 = await b.publish("t", {"n": 1})
    e2 = await b.publish("t", {"n": 2})
    await b.publish("other", {"n": 3})
    assert [e.data["n"] for e in seen] == [1, 2]
    assert e1.cursor == f"{b.epoch}-1" and e2.cursor == f"{b.epoch}-2" == b.head("t")
    assert e1.raw == b'{"n":1}'
    stop()
    await b.publish("t", {"n": 4})
    assert len(seen) == 2


async def test_replay_exactly_what_follows() -> None:
    b = MemoryBroker()
    events = [await b.publish("t", {"n": i}) for i in range(5)]
    replayed = await b.replay("t", events[1].cursor)
    assert replayed is not None and [e.data["n"] for e in replayed] == [2, 3, 4]
    assert await b.replay("t", events[-1].cursor) == []
    assert await b.replay("t", f"{b.epoch}-0") is not None  # from the very start
    assert await b.replay("t", f"{b.epoch}-99") is None  # from the future
    assert await b.replay("t", "other-1") is None  # another epoch (a restart)
    assert await b.replay("t", "garbage") is None
    assert MemoryBroker().epoch != b.epoch


async def test_history_bounded_by_count_bytes_and_age() -> None:
    clock = Clock()
    b = MemoryBroker(HistoryLimits(max_age_ms=10_000, max_events=3, max_bytes=1_000_000), clock=clock)
    events = [await b.publish("t", {"n": i}) for i in range(5)]
    assert await b.replay("t", events[0].cursor) is None  # 1 was trimmed by count
    assert [e.data["n"] for e in await b.replay("t", events[1].cursor) or []] == [2, 3, 4]

    small = MemoryBroker(HistoryLimits(max_age_ms=10_000, max_events=100, max_bytes=30), clock=clock)
    evs = [await small.publish("t", {"pad": "x" * 5}) for _ in range(4)]  # 15 bytes each: 2 fit
    assert await small.replay("t", evs[0].cursor) is None
    assert len(await small.replay("t", evs[1].cursor) or []) == 2

    aged = MemoryBroker(HistoryLimits(max_age_ms=10_000, max_events=100, max_bytes=10**6), clock=clock)
    first = await aged.publish("t", {"n": 0})
    await aged.publish("t", {"n": 1})
    clock.now += 11
    assert await aged.replay("t", first.cursor) is None  # the event after it expired
