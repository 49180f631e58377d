"""The subscription core without a socket: a `Streams` over the in-memory broker and a real fan-out; the
frames a session would be sent are read from its queue (no transport: everything queues)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from openmanager.broker.memory import HistoryLimits, MemoryBroker
from openmanager.core.errors import OpenManagerError
from openmanager.core.filters import parse_filter
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.outbound import Entry
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.session import Session
from openmanager.pipeline.shape import Shape
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats
from openmanager.pipeline.subscriptions import (
    MessageWire,
    Streams,
    SubscribeRequest,
    SubscriptionLimits,
    Subscriptions,
    subscribe_since,
    subscribe_target,
)


class Hub:
    """The parts a `Streams` is built from, as the composition root builds them."""

    def __init__(self, *, limits: SubscriptionLimits | None = None, max_events: int = 10_000) -> None:
        self.state = FleetState(StatusPolicy(), FleetHistory(10), tick_ms=1000)
        self.state.register(ServerInfo("web-01", "web-01"))
        self.broker = MemoryBroker(HistoryLimits(max_events=max_events))
        self.stats = HubStats()
        self.fanout = FanOut(self.broker, self.state, self.stats)
        self.streams = Streams(self.fanout, self.broker, self.snapshot, self.state, self.stats, limits=limits)
        self.alerts: list[dict[str, Any]] = []

    def snapshot(self, topic: str) -> dict[str, Any]:
        if topic == "metrics":
            return self.state.snapshot()
        if topic == "alerts":
            return {"alerts": list(self.alerts)}
        raise KeyError(topic)

    def session(self, wire: Any = None) -> Subscriptions:
        session = Session("admin", "ws", "", self.stats)
        self.streams.open(session)
        return self.streams.subscriptions(session, wire or MessageWire.JSON)

    async def log(self, n: int) -> str:
        return (await self.broker.publish("logs", {"records": [{"n": n}]})).cursor

    async def metrics(self, cpu: float) -> str:
        self.state.apply(Sample("web-01", 1_000_000 + int(cpu), {"cpu": cpu}))
        return (await self.broker.publish("metrics", self.state.snapshot())).cursor


def sent(subs: Subscriptions) -> list[dict[str, Any]]:
    queue, out = subs.session.queue, []
    while len(queue):
        frame = queue.pop()
        assert isinstance(frame, str)
        out.append(orjson.loads(frame))
    return out


def logs_of(messages: list[dict[str, Any]]) -> list[int]:
    return [m["data"]["records"][0]["n"] for m in messages if m.get("type") == "event"]


def logs(since: str | None = None, request_id: Any = "1") -> SubscribeRequest:
    return SubscribeRequest("logs", parse_filter("logs", {}), "json", since, request_id)


async def test_a_fresh_subscription_is_answered_then_snapshot_then_live() -> None:
    hub = Hub()
    await hub.metrics(10.0)
    subs = hub.session()
    await hub.streams.subscribe(subs, [SubscribeRequest("metrics", parse_filter("metrics", {}), id=7)])
    reply, snapshot = sent(subs)
    assert reply == {"type": "subscribed", "id": 7, "sub": reply["sub"], "topic": "metrics",
                     "cursor": hub.broker.head("metrics")}  # no `recovered`: no resume was asked for
    assert snapshot["type"] == "snapshot" and snapshot["cursor"] == reply["cursor"]
    assert snapshot["data"]["servers"]["web-01"]["cpu"] == 10.0
    await hub.metrics(20.0)
    (event,) = sent(subs)
    assert event["type"] == "event" and event["data"]["servers"]["web-01"]["cpu"] == 20.0


async def test_a_resume_within_the_history_replays_then_releases_what_was_held_once() -> None:
    hub = Hub()
    cursors = [await hub.log(n) for n in range(3)]
    subs = hub.session()
    pending = subs.begin(logs(since=cursors[0]))
    assert pending is not None and pending.since == cursors[0]
    # while the (networked) replay is read, two events arrive; the replay was read after the first of them
    await hub.log(3)
    replay = await hub.streams.replay(pending)
    await hub.log(4)
    assert sent(subs) == []  # held until complete
    subs.complete([pending], [replay])
    out = sent(subs)
    assert out[0]["type"] == "subscribed" and out[0]["recovered"] is True
    assert logs_of(out) == [1, 2, 3, 4]  # no gap, no duplicate, no snapshot for an ordered topic
    assert subs.session.held == {}


async def test_a_resume_too_old_is_not_recovered_and_starts_from_a_snapshot() -> None:
    hub = Hub(max_events=2)
    first = await hub.metrics(1.0)
    for cpu in (2.0, 3.0, 4.0):  # the first falls out of the history
        await hub.metrics(cpu)
    subs = hub.session()
    await hub.streams.subscribe(subs, [SubscribeRequest("metrics", parse_filter("metrics", {}), since=first)])
    reply, snapshot = sent(subs)
    assert reply["recovered"] is False and reply["cursor"] == hub.broker.head("metrics")
    assert snapshot["type"] == "snapshot" and snapshot["data"]["servers"]["web-01"]["cpu"] == 4.0
    await hub.metrics(5.0)
    assert [m["data"]["servers"]["web-01"]["cpu"] for m in sent(subs)] == [5.0]


async def test_held_events_the_snapshot_reflects_are_not_sent_again() -> None:
    hub = Hub(max_events=1)
    gone = await hub.log(0)
    await hub.log(1)
    subs = hub.session()
    pending = subs.begin(logs(since=gone))
    assert pending is not None
    await hub.log(2)  # published while the replay is read: the head moves past it
    subs.complete([pending], [None])
    head_reply, *rest = sent(subs)
    assert head_reply["recovered"] is False and rest == []  # logs has no snapshot; 2 is before the head
    await hub.log(3)
    assert logs_of(sent(subs)) == [3]


async def test_subscribing_twice_answers_the_same_subscription_without_a_second_snapshot() -> None:
    hub = Hub()
    subs = hub.session()
    request = SubscribeRequest("metrics", parse_filter("metrics", {}))
    await hub.streams.subscribe(subs, [request])
    first = sent(subs)[0]
    await hub.streams.subscribe(subs, [request])
    (again,) = sent(subs)
    assert again["sub"] == first["sub"] and "recovered" not in again
    assert len(subs.session.subs) == 1


def test_an_unknown_topic_or_encoding_or_cursor_is_refused_with_its_code() -> None:
    with pytest.raises(OpenManagerError) as caught:
        subscribe_target({"topic": "nope"})
    assert caught.value.code == "unknown_topic"
    with pytest.raises(OpenManagerError) as caught:
        subscribe_target({"topic": "logs", "encoding": "delta"})
    assert caught.value.code == "invalid_encoding"
    with pytest.raises(OpenManagerError) as caught:
        subscribe_since({"since": 5})
    assert caught.value.code == "invalid_cursor"
    assert subscribe_target({"topic": "metrics", "encoding": "delta"}, binary=True) == ("metrics", "delta+msgpack")


async def test_the_connections_limits_refuse_before_attaching() -> None:
    hub = Hub(limits=SubscriptionLimits(per_connection=1, cost_budget=5))
    subs = hub.session()
    await hub.streams.subscribe(subs, [logs()])
    with pytest.raises(OpenManagerError) as caught:
        await hub.streams.subscribe(subs, [SubscribeRequest("metrics", parse_filter("metrics", {}))])
    assert caught.value.code == "too_many_subscriptions"
    assert [s.topic for s in subs.session.subs.values()] == ["logs"]
    costly = Hub(limits=SubscriptionLimits(per_connection=8, cost_budget=5)).session()
    with pytest.raises(OpenManagerError) as caught:
        costly.begin(SubscribeRequest("metrics", parse_filter("metrics", {"where": "cpu > 1 and memory > 2"})))
    assert caught.value.code == "cost_budget_exceeded" and costly.session.subs == {}


async def test_unsubscribe_and_teardown_leave_every_shape_and_the_registry() -> None:
    hub = Hub()
    subs = hub.session()
    await hub.streams.subscribe(subs, [logs(), SubscribeRequest("metrics", parse_filter("metrics", {}))])
    sent(subs)
    with pytest.raises(OpenManagerError) as caught:
        subs.unsubscribe("s-nope")
    assert caught.value.code == "unknown_subscription"
    shape = next(s for s in subs.session.subs.values() if s.topic == "logs")
    assert subs.unsubscribe(shape.sub) is shape
    await hub.log(1)
    assert sent(subs) == []
    pending = subs.begin(logs(since=hub.broker.head("logs")))  # a resume still held at teardown
    assert pending is not None and hub.stats.connections["ws"] == 1
    subs.close()
    assert subs.session.subs == {} and subs.session.held == {} and hub.streams.open_sessions() == []
    assert hub.fanout.shapes() == [] and hub.stats.connections["ws"] == 0
    subs.complete([pending], [[]])  # a replay that ends after the teardown sends nothing
    assert sent(subs) == []


class Recording:
    """A wire that records the sequence it is asked to word (as `/sse`'s does, with a reset)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def subscribed(self, shape: Shape[Session], request: SubscribeRequest, cursor: str,
                   recovered: bool | None) -> Entry | None:
        self.calls.append(("subscribed", shape.topic, recovered))
        return None

    def reset(self, topics: list[str]) -> Entry | None:
        self.calls.append(("reset", topics))
        return None

    def snapshot(self, shape: Shape[Session], cursor: str, data: dict[str, Any]) -> Entry | None:
        self.calls.append(("snapshot", shape.topic))
        return None


async def test_several_topics_at_once_reset_and_snapshot_only_what_was_not_recovered() -> None:
    hub = Hub()
    since = await hub.log(0)
    await hub.log(1)
    wire = Recording()
    subs = hub.session(wire)
    requests = [logs(since=since), SubscribeRequest("alerts", parse_filter("alerts", {})),
                SubscribeRequest("metrics", parse_filter("metrics", {}), since="0-999")]
    await hub.streams.subscribe(subs, requests)
    assert wire.calls == [
        ("subscribed", "logs", True), ("subscribed", "alerts", None), ("subscribed", "metrics", False),
        ("reset", ["alerts", "metrics"]), ("snapshot", "alerts"), ("snapshot", "metrics"),
    ]
    assert logs_of(sent(subs)) == [1]


async def test_the_registry_lists_and_closes_the_open_sessions() -> None:
    hub = Hub()
    subs = hub.session()
    await hub.streams.subscribe(subs, [logs()])
    (listed,) = hub.streams.connections()
    assert listed["id"] == subs.session.id and [s["topic"] for s in listed["subscriptions"]] == ["logs"]
    hub.streams.close_all(1012, "restarting")
    assert subs.session.close_code == 1012 and subs.session.close_reason == "restarting"
    subs.close()
    assert hub.streams.connections() == []


async def test_a_request_refused_midway_still_completes_the_ones_before_it() -> None:
    hub = Hub(limits=SubscriptionLimits(per_connection=1))
    subs = hub.session()
    with pytest.raises(OpenManagerError) as caught:
        await hub.streams.subscribe(subs, [logs(), SubscribeRequest("alerts", parse_filter("alerts", {}))])
    assert caught.value.code == "too_many_subscriptions"
    (reply,) = sent(subs)
    assert reply["type"] == "subscribed" and reply["topic"] == "logs" and subs.session.held == {}
    await hub.log(1)
    assert logs_of(sent(subs)) == [1]  # released, not held for ever
