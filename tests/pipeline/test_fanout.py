from __future__ import annotations

import orjson

from openmanager.broker.base import Event
from openmanager.broker.memory import MemoryBroker
from openmanager.core.encoding import encode_event, splice_event
from openmanager.core.filters import parse_filter
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo, Status
from openmanager.core.protocol import CloseCode
from openmanager.core.status import StatusPolicy
from openmanager.pipeline.fanout import FanOut, shape_id
from openmanager.pipeline.session import QueueLimits, Session
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None) -> tuple[FleetState, MemoryBroker, FanOut, HubStats]:
    state = FleetState(StatusPolicy(), FleetHistory(100), tick_ms=1000, clock=clock or Clock(1000.0))
    for sid, env in (("web-01", "prod"), ("web-02", "staging"), ("db-01", "prod")):
        state.register(ServerInfo(sid, sid, tags={"env": env}))
    broker = MemoryBroker()
    stats = HubStats()
    return state, broker, FanOut(broker, state, stats), stats


def drain(session: Session) -> list[str]:
    out = []
    while len(session.queue):
        out.append(session.queue.pop())
    return out


async def test_one_frame_per_shape_shared_by_sessions() -> None:
    state, broker, fanout, stats = make()
    a, b, c = (Session("admin", "ws", "", stats) for _ in range(3))
    web = fanout.shape_for("metrics", parse_filter("metrics", {"servers": ["web-*"]}))
    assert fanout.shape_for("metrics", parse_filter("metrics", {"servers": "web-*"})) is web
    everything = fanout.shape_for("metrics", parse_filter("metrics", {}))
    fanout.attach(a, web)
    fanout.attach(b, web)
    fanout.attach(c, everything)
    for sid, cpu in (("web-01", 10.0), ("web-02", 20.0), ("db-01", 30.0)):
        state.apply(Sample(sid, 1_000_000, {"cpu": cpu}))
    await broker.publish("metrics", state.snapshot())
    fa, fb, fc = drain(a), drain(b), drain(c)
    assert fa == fb and fa[0] is fb[0]  # the very same string object, encoded once
    assert set(orjson.loads(fa[0])["data"]["servers"]) == {"web-01", "web-02"}
    assert set(orjson.loads(fc[0])["data"]["servers"]) == {"web-01", "web-02", "db-01"}
    assert stats.frames_encoded == 2


async def test_spliced_frame_equals_encoded_frame() -> None:
    data = {"ts": 5, "servers": {"a": {"cpu": 1.5, "status": "healthy"}}}
    spliced = splice_event("s1", "ep-3", orjson.dumps(data))
    assert orjson.loads(spliced) == orjson.loads(encode_event("s1", "ep-3", data))


def test_shape_ids_are_stable_and_distinct() -> None:
    k1 = parse_filter("metrics", {"servers": ["a"]}).key
    assert shape_id(k1, "json") == shape_id(parse_filter("metrics", {"servers": "a"}).key, "json")
    assert shape_id(k1, "json") != shape_id(k1, "msgpack")
    assert shape_id(k1, "json") != shape_id(parse_filter("metrics", {"servers": ["b"]}).key, "json")


async def test_detach_last_session_drops_shape_and_listener() -> None:
    _, broker, fanout, stats = make()
    s = Session("admin", "ws", "", stats)
    shape = fanout.shape_for("logs", parse_filter("logs", {"level": "ERROR"}))
    fanout.attach(s, shape)
    fanout.detach_all(s)
    assert fanout.shapes() == [] and s.subs == {}
    await broker.publish("logs", {"records": [{"server": "x", "level": "ERROR", "message": "m"}]})
    assert len(s.queue) == 0


async def test_overflow_closes_slow_consumer_with_4008() -> None:
    _, broker, fanout, stats = make()
    slow = Session("admin", "ws", "", stats, QueueLimits(max_messages=3, max_bytes=10**6))
    ok = Session("admin", "ws", "", stats)
    shape = fanout.shape_for("logs", parse_filter("logs", None))
    fanout.attach(slow, shape)
    fanout.attach(ok, shape)
    for i in range(5):
        await broker.publish("logs", {"records": [{"server": "x", "level": "INFO", "message": str(i)}]})
    assert slow.close_code == CloseCode.SLOW_CONSUMER
    assert stats.slow_consumer_closes == 1 and stats.queue_drops == 1
    assert len(drain(ok)) == 5  # the others are unaffected


def test_silent_servers_turn_offline() -> None:
    clock = Clock(1000.0)
    state, _, _, _ = make(clock)
    state.apply(Sample("web-01", 1_000_000, {"cpu": 90.0}))
    state.apply(Sample("web-02", 1_000_000, {"cpu": 10.0}))
    assert state.servers["web-01"].status is Status.CRITICAL
    clock.now += 9.0
    state.apply(Sample("web-02", 1_009_000, {"cpu": 10.0}))
    assert state.expire() == []
    clock.now += 2.0  # web-01 silent for 11 s > 10 s
    gone = state.expire()
    assert [s.info.id for s in gone] == ["web-01"]
    assert state.servers["web-01"].status is Status.OFFLINE
    assert state.expire() == []  # reported once
    summary = state.fleet_summary()
    assert (summary["total"], summary["offline"], summary["healthy"]) == (3, 2, 1)  # db-01 never reported
    state.apply(Sample("web-01", 1_012_000, {"cpu": 50.0}))
    assert state.servers["web-01"].status is Status.HEALTHY


class Transport:
    """An in-memory stand-in for the socket side of `send_now`: it can be paused like a real one."""

    def __init__(self) -> None:
        self.paused = False
        self.wire: list[str] = []

    def send_now(self, frame: str) -> bool:
        if self.paused:
            return False
        self.wire.append(frame)
        return True

    async def write(self, frame: str) -> None:
        self.wire.append(frame)


async def test_fast_path_keeps_order_through_backpressure() -> None:
    import asyncio

    stats = HubStats()
    t = Transport()
    s = Session("admin", "ws", "", stats, send_now=t.send_now)
    s.send("1")
    assert t.wire == ["1"] and len(s.queue) == 0 and stats.direct_writes == 1
    t.paused = True
    s.send("2")
    t.paused = False
    s.send("3")  # "2" is still queued, so "3" must queue behind it, not jump ahead
    assert t.wire == ["1"] and len(s.queue) == 2
    writer = asyncio.create_task(s.run_writer(t.write))
    while len(s.queue):
        await asyncio.sleep(0)
    s.send("4")
    assert t.wire == ["1", "2", "3", "4"]
    s.close(1000)
    await asyncio.wait_for(writer, 1)
    assert stats.messages_sent == 4


async def test_slow_client_gets_conflated_metrics_not_a_backlog() -> None:
    import asyncio

    state, broker, fanout, stats = make()
    t = Transport()
    slow = Session("admin", "ws", "", stats, QueueLimits(max_messages=4, max_bytes=10**6), send_now=t.send_now)
    shape = fanout.shape_for("metrics", parse_filter("metrics", {}))
    fanout.attach(slow, shape)
    t.paused = True
    cursors = []
    for i in range(50):  # far more events than the queue holds: metrics never overflow, they merge
        sid = ("web-01", "web-02", "db-01")[i % 3]
        state.apply(Sample(sid, 1_000_000 + i, {"cpu": float(i)}))
        event = await broker.publish("metrics", {"ts": 1_000_000 + i, "servers": {sid: state.servers[sid].wire()}})
        cursors.append(event.cursor)
    assert slow.close_code is None and len(slow.queue) == 2  # the first frame, then one conflated update
    assert stats.conflations == 48
    t.paused = False
    writer = asyncio.create_task(slow.run_writer(t.write))
    while len(slow.queue):
        await asyncio.sleep(0)
    slow.close(1000)
    await asyncio.wait_for(writer, 1)
    first, merged = (orjson.loads(f) for f in t.wire)
    assert first["cursor"] == cursors[0]
    assert merged["cursor"] == cursors[-1]  # resumable from the newest event it covers
    latest = {k: v["cpu"] for k, v in merged["data"]["servers"].items()}
    assert latest == {"web-01": 48.0, "web-02": 49.0, "db-01": 47.0}


async def test_passes_that_offer_a_frame_are_reported_as_bursts() -> None:
    state, broker, fanout, stats = make()
    bursts: list[tuple[float, float]] = []
    fanout.on_burst = lambda started, ended: bursts.append((started, ended))
    fanout.burst_min_s = 0.0
    s = Session("admin", "ws", "", stats)
    fanout.attach(s, fanout.shape_for("metrics", parse_filter("metrics", {"servers": ["web-*"]})))
    fanout.shape_for("logs", parse_filter("logs", {}))  # listened to, with no session
    await broker.publish("logs", {"records": [{"server": "web-01", "level": "INFO", "message": "m"}]})
    assert bursts == []  # nothing was offered to anyone
    state.apply(Sample("web-01", 1_000_000, {"cpu": 5.0}))
    await broker.publish("metrics", state.snapshot())
    assert len(bursts) == 1 and bursts[0][0] <= bursts[0][1]
    fanout.burst_min_s = 60.0  # a pass shorter than the threshold is not a burst
    await broker.publish("metrics", state.snapshot())
    assert len(bursts) == 1 and len(drain(s)) == 2


async def test_a_one_server_event_visits_only_the_shapes_that_may_keep_it() -> None:
    """Per-server shapes are indexed by the servers they name: an event of web-01 goes to the shapes that
    name web-01 and those that name no exact server (globs, tags, everything), never to one that names only
    other servers, in the order the shapes were made; the frames are what visiting every shape gives."""
    state, broker, fanout, stats = make()
    made = {
        "web-01": fanout.shape_for("metrics", parse_filter("metrics", {"servers": ["web-01"]})),
        "web-02": fanout.shape_for("metrics", parse_filter("metrics", {"servers": ["web-02"]})),
        "both": fanout.shape_for("metrics", parse_filter("metrics", {"servers": ["web-01", "db-01"]})),
        "glob": fanout.shape_for("metrics", parse_filter("metrics", {"servers": ["web-*"]})),
        "prod": fanout.shape_for("metrics", parse_filter("metrics", {"tags": {"env": "prod"}})),
        "all": fanout.shape_for("metrics", parse_filter("metrics", {})),
    }
    names = {shape.sub: name for name, shape in made.items()}
    sessions = {name: Session("admin", "ws", "", stats) for name in made}
    for name, shape in made.items():
        fanout.attach(sessions[name], shape)
    events: list[Event] = []
    broker.listen("metrics", events.append)
    state.apply(Sample("web-01", 1_000_000, {"cpu": 10.0}))
    state.apply(Sample("db-01", 1_000_000, {"cpu": 20.0}))
    one = {"ts": 1_000_000, "servers": {"web-01": state.servers["web-01"].wire()}}
    await broker.publish("metrics", one)
    assert [names[s.sub] for s in fanout.candidates(events[-1])] == ["web-01", "both", "glob", "prod", "all"]
    got = {name: [orjson.loads(f)["data"]["servers"] for f in drain(s)] for name, s in sessions.items()}
    assert {name for name, frames in got.items() if frames} == {"web-01", "both", "glob", "prod", "all"}
    assert got["web-01"] == got["both"] == got["glob"] == got["prod"] == got["all"] == [one["servers"]]

    state.apply(Sample("web-02", 1_000_000, {"cpu": 30.0}))
    await broker.publish("metrics", state.snapshot())  # several servers: each shape once
    assert [names[s.sub] for s in fanout.candidates(events[-1])] == list(made)
    got = {name: [set(orjson.loads(f)["data"]["servers"]) for f in drain(s)] for name, s in sessions.items()}
    assert got["both"] == got["prod"] == [{"web-01", "db-01"}] and got["glob"] == [{"web-01", "web-02"}]
    assert got["web-02"] == [{"web-02"}] and got["all"] == [{"web-01", "web-02", "db-01"}]

    fanout.detach_all(sessions["web-01"])  # the index forgets a dropped shape
    fanout.detach_all(sessions["both"])
    await broker.publish("metrics", one)
    assert [names[s.sub] for s in fanout.candidates(events[-1])] == ["glob", "prod", "all"]
    await broker.publish("logs", {"records": [{"server": "web-01", "message": "x"}]})  # no index: every shape
