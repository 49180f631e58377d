"""The Redis broker against a real Redis: two brokers on one Redis are two hub nodes.

The shared Redis (127.0.0.1:6379) serves most tests, each under a prefix of its own that is deleted
afterwards; the restart tests start a redis-server of their own on a free port.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from openmanager.broker.base import Event
from openmanager.broker.memory import HistoryLimits
from openmanager.broker.redis import BASE_MS, RedisBroker, id_to_seq, seq_to_id
from tests.services import RedisServer, delete_prefix, redis_url


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


@pytest.fixture
def prefix() -> str:
    return f"omtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def nodes(prefix: str) -> AsyncIterator[tuple[RedisBroker, RedisBroker]]:
    url = redis_url()
    a = RedisBroker(url, prefix=prefix, node="a", topics=["t", "u"])
    b = RedisBroker(url, prefix=prefix, node="b", topics=["t", "u"])
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
        delete_prefix(url, prefix)


def test_seq_maps_entry_ids_both_ways_in_order_and_exactly_in_javascript() -> None:
    ids = ["0-0", f"{BASE_MS + 1}-0", f"{BASE_MS + 1}-1", f"{BASE_MS + 1}-4095", f"{BASE_MS + 2}-0",
           "1795692013257-17", "3900000000000-4095"]
    seqs = [id_to_seq(i) for i in ids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [seq_to_id(s) for s in seqs] == ids
    assert seqs[0] == 0 and seqs[-1] < 2**53  # year 2093 still fits a JavaScript number exactly


async def test_every_node_gets_every_event_in_the_same_order_with_the_same_cursors(
    nodes: tuple[RedisBroker, RedisBroker],
) -> None:
    a, b = nodes
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    a.listen("t", seen_a.append)
    b.listen("t", seen_b.append)
    published = []
    for i in range(20):
        published.append(await (a if i % 2 else b).publish("t", {"n": i}))
    await until(lambda: len(seen_a) == 20 and len(seen_b) == 20)
    assert [e.data["n"] for e in seen_a] == list(range(20))
    assert [e.cursor for e in seen_a] == [e.cursor for e in seen_b] == [e.cursor for e in published]
    assert [e.origin for e in seen_a] == ["b", "a"] * 10
    seqs = [e.seq for e in seen_a]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
    assert seen_a[0].raw == b'{"n":0}' and seen_a[0].cursor.startswith(a.epoch + "-")
    assert a.epoch == b.epoch
    assert a.head("t") == b.head("t") == published[-1].cursor
    assert a.head("u") == f"{a.epoch}-0"  # nothing published there yet


async def test_replay_from_any_node_gives_exactly_what_follows(nodes: tuple[RedisBroker, RedisBroker]) -> None:
    a, b = nodes
    events = [await a.publish("t", {"n": i}) for i in range(6)]
    for node in (a, b):
        replayed = await node.replay("t", events[1].cursor)
        assert replayed is not None and [e.data["n"] for e in replayed] == [2, 3, 4, 5]
        assert [e.cursor for e in replayed] == [e.cursor for e in events[2:]]
        assert await node.replay("t", events[-1].cursor) == []
        from_start = await node.replay("t", f"{node.epoch}-0")
        assert from_start is not None and len(from_start) == 6
        assert await node.replay("t", f"{node.epoch}-{events[-1].seq + 1}") is None  # from the future
        unknown = events[2].seq + 1
        while unknown in {e.seq for e in events}:  # events published in the same millisecond are adjacent
            unknown += 1
        assert await node.replay("t", f"{node.epoch}-{unknown}") is None  # not an event's cursor
        assert await node.replay("t", f"zz{node.epoch}-{events[1].seq}") is None  # another epoch
        assert await node.replay("t", "garbage") is None


async def test_history_is_trimmed_by_count_and_replay_says_when_it_is_gone(prefix: str) -> None:
    url = redis_url()
    broker = RedisBroker(url, HistoryLimits(max_events=10), prefix=prefix, topics=["t"])
    await broker.start()
    try:
        events = [await broker.publish("t", {"n": i}) for i in range(400)]
        length = await broker.redis.xlen(broker.key("t"))
        assert 10 <= length <= 150  # MAXLEN ~ trims whole macro nodes (100 entries by default)
        assert await broker.replay("t", events[0].cursor) is None
        recent = await broker.replay("t", events[-5].cursor)
        assert recent is not None and [e.data["n"] for e in recent] == [396, 397, 398, 399]
    finally:
        await broker.close()
        delete_prefix(url, prefix)


async def test_node_local_topics_stay_off_redis(nodes: tuple[RedisBroker, RedisBroker]) -> None:
    a, b = nodes
    seen_b: list[Event] = []
    b.listen("system", seen_b.append)
    event = await a.publish("system", {"node": "a"})
    assert event.cursor.startswith(a.local.epoch + "-")
    assert await a.redis.exists(a.key("system")) == 0
    assert await b.replay("system", event.cursor) is None  # another node's statistics: not recoverable there
    assert seen_b == []


async def test_a_restarted_redis_is_rejoined_and_nothing_it_accepted_is_lost(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path / "redis").start()
    a = RedisBroker(server.url, prefix=prefix, node="a", topics=["t"])
    b = RedisBroker(server.url, prefix=prefix, node="b", topics=["t"])
    states: list[bool] = []
    b.on_state.append(lambda up, _reason: states.append(up))
    await a.start()
    await b.start()
    seen: list[Event] = []
    b.listen("t", seen.append)
    try:
        before = [await a.publish("t", {"n": i}) for i in range(50)]
        server.kill()
        # publishing waits for Redis to come back; start one now, restart Redis, and it lands
        pending = asyncio.ensure_future(a.publish("t", {"n": 50}))
        await until(lambda: not b.ready()[0], timeout=10)
        assert b.ready()[1].startswith("redis unreachable")
        assert not pending.done()
        server.start()
        await asyncio.wait_for(pending, 15)
        after = [await a.publish("t", {"n": i}) for i in range(51, 60)]
        await until(lambda: len(seen) >= 60, timeout=15)
        assert [e.data["n"] for e in seen] == list(range(60))
        assert b.ready() == (True, "ok") and states == [False, True]
        assert a.epoch == b.epoch and before[0].cursor.split("-")[0] == after[-1].cursor.split("-")[0]
        replayed = await b.replay("t", before[10].cursor)  # a cursor from before the crash still resumes
        assert replayed is not None and [e.data["n"] for e in replayed] == list(range(11, 60))
    finally:
        await a.close()
        await b.close()
        server.stop()


async def test_a_redis_that_lost_its_data_starts_a_new_epoch(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    a = RedisBroker(server.url, prefix=prefix, node="a", topics=["t"])
    epochs: list[tuple[str, str]] = []
    a.on_epoch.append(lambda old, new: epochs.append((old, new)))
    seen: list[Event] = []
    a.listen("t", seen.append)
    await a.start()
    try:
        old = await a.publish("t", {"n": 0})
        await until(lambda: len(seen) == 1)
        server.kill()
        await until(lambda: not a.ready()[0], timeout=10)
        server.start()
        new = await asyncio.wait_for(a.publish("t", {"n": 1}), 15)
        await until(lambda: len(seen) == 2, timeout=15)
        assert new.cursor.split("-")[0] != old.cursor.split("-")[0]
        assert epochs and epochs[-1][1] == a.epoch == new.cursor.split("-")[0]
        assert await a.replay("t", old.cursor) is None  # from before the loss: not recovered
        assert seen[-1].cursor == new.cursor
    finally:
        await a.close()
        server.stop()


async def test_publish_many_is_one_round_trip_in_order(nodes: tuple[RedisBroker, RedisBroker]) -> None:
    """Several events in one pipeline: each topic's events get entry ids in the order given, the other node
    sees them in that order with the same cursors, and a node-local topic among them stays local."""
    a, b = nodes
    seen_b: dict[str, list[Event]] = {"t": [], "u": []}
    b.listen("t", seen_b["t"].append)
    b.listen("u", seen_b["u"].append)
    local: list[Event] = []
    a.listen("system", local.append)
    items: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
        ("t" if i % 3 else "u", {"n": i}, {"x": i} if i % 5 == 0 else None) for i in range(30)]
    items.insert(7, ("system", {"node": "a"}, None))
    events = await a.publish_many(items)
    assert [(e.topic, dict(e.data), e.extra) for e in events] == items
    for topic in ("t", "u"):
        mine = [e for e in events if e.topic == topic]
        assert [e.seq for e in mine] == sorted(e.seq for e in mine) and len({e.seq for e in mine}) == len(mine)
    await until(lambda: len(seen_b["t"]) == 20 and len(seen_b["u"]) == 10)
    for topic in ("t", "u"):
        assert [(e.cursor, e.extra) for e in seen_b[topic]] == [(e.cursor, e.extra) for e in events if e.topic == topic]
    assert [e.data for e in local] == [{"node": "a"}]  # delivered locally, never through Redis
    assert await a.publish_many([]) == []
