"""The fan-out's direct writes (`Session.direct`): wire bytes built once per deflate window and written
straight to the transport only while the session is open, has nothing queued, holds no replay and its
transport is ready; otherwise the frame takes the ordered path, never overtaking what waits."""

from __future__ import annotations

import orjson

from openmanager.broker.memory import MemoryBroker
from openmanager.core.filters import parse_filter
from openmanager.core.history import FleetHistory
from openmanager.core.model import Sample, ServerInfo
from openmanager.core.status import StatusPolicy
from openmanager.core.wsframe import frame_bytes
from openmanager.pipeline.fanout import FanOut, Shape
from openmanager.pipeline.session import Session
from openmanager.pipeline.state import FleetState
from openmanager.pipeline.stats import HubStats


class RecordingTransport:
    """The two transport methods `deliver` calls, recording what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


class Fleet:
    def __init__(self) -> None:
        self.state = FleetState(StatusPolicy(), FleetHistory(100), tick_ms=1000, clock=lambda: 1000.0)
        self.state.register(ServerInfo("web-01", "web-01"))
        self.broker = MemoryBroker()
        self.stats = HubStats()
        self.fanout = FanOut(self.broker, self.state, self.stats)
        self.shape: Shape = self.fanout.shape_for("metrics", parse_filter("metrics", {}))
        self.n = 0

    def session(self, *, wbits: int = 0, hold: bool = False) -> tuple[Session, RecordingTransport]:
        s, t = Session("admin", "ws", "", self.stats), RecordingTransport()
        s.attach_transport(t, wbits, True)
        self.fanout.attach(s, self.shape, hold=hold)
        return s, t

    async def publish(self) -> int:
        """One metrics event; answers its cpu value."""
        self.n += 1
        self.state.apply(Sample("web-01", 1_000_000 + self.n, {"cpu": float(self.n)}))
        await self.broker.publish("metrics", self.state.snapshot())
        return self.n


def payload_of(wire: bytes) -> str:
    """The text of an unmasked, uncompressed server frame shorter than 64 KB."""
    return (wire[2:] if wire[1] < 126 else wire[4:]).decode()


def cpu_of(frame: bytes | str) -> float:
    text = frame if isinstance(frame, str) else payload_of(frame)
    return float(orjson.loads(text)["data"]["servers"]["web-01"]["cpu"])


async def test_one_wire_form_per_window_written_straight_to_each_transport() -> None:
    fleet = Fleet()
    (a, ta), (b, tb), (c, tc) = fleet.session(), fleet.session(), fleet.session(wbits=15)
    await fleet.publish()
    assert len(ta.written) == len(tb.written) == len(tc.written) == 1
    assert ta.written[0] is tb.written[0]  # built once, shared
    assert ta.written[0] == frame_bytes(payload_of(ta.written[0]), 0)
    assert tc.written[0][0] & 0x40 and tc.written[0] != ta.written[0]  # RSV1: the deflated form
    assert fleet.stats.direct_writes == 3 and a.messages_sent == b.messages_sent == c.messages_sent == 1


async def test_a_paused_transport_queues_and_later_frames_wait_behind() -> None:
    fleet = Fleet()
    s, t = fleet.session()
    await fleet.publish()
    s.transport_ready(False)  # backpressure
    assert s.direct is None
    await fleet.publish()
    s.transport_ready(True)
    assert s.direct is None  # something is queued: a direct write would overtake it
    await fleet.publish()
    assert len(t.written) == 1 and len(s.queue) >= 1

    drained: list[str | bytes] = []

    async def write(frame: str | bytes) -> None:
        drained.append(frame)

    await s.drain(write)
    assert s.direct is t  # caught up: direct again
    last = await fleet.publish()
    assert cpu_of(t.written[-1]) == last
    seen = [cpu_of(t.written[0]), *(cpu_of(f) for f in drained), cpu_of(t.written[-1])]
    assert seen == sorted(seen) and seen[0] == 1 and seen[-1] == last  # in order, nothing overtook


async def test_a_held_replay_and_a_closing_transport_take_the_ordered_path() -> None:
    fleet = Fleet()
    s, t = fleet.session(hold=True)
    assert s.direct is None
    await fleet.publish()
    assert t.written == [] and s.held[fleet.shape.sub]
    fleet.fanout.release(s, fleet.shape, after="")
    assert not s.held

    async def write(frame: str | bytes) -> None:
        t.write(frame if isinstance(frame, bytes) else frame.encode())

    await s.drain(write)
    assert s.direct is t
    t.closing = True  # closing without a readiness report (uvicorn's shutdown): checked per write
    await fleet.publish()
    assert len(t.written) == 1 and len(s.queue) == 1


async def test_a_closed_session_is_never_written_and_lets_go_of_its_transport() -> None:
    fleet = Fleet()
    s, t = fleet.session()
    s.close(1000)
    assert s.direct is None and s._transport is None
    s.transport_ready(True)  # a late report changes nothing
    assert s.direct is None
    s.attach_transport(t, 0, True)  # nor a late attachment
    assert s.direct is None and s._transport is None
    await fleet.publish()
    assert t.written == []
