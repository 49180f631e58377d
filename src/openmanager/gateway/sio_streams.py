"""The one adapter between Socket.IO sessions and the hub's streams: attach, replay, snapshot, teardown.

It listens to the broker itself and keeps its own subscription shapes (`SioShape`: a `Shape` whose
frames are Socket.IO packets), so that each event becomes one packet per shape — `42/v1,["event",{...}]`
for our namespace, `42["server-metrics",{...}]` per envelope for the original's — written to every
session of the shape by `pipeline.session.deliver` (the same direct write, shared wire bytes and shared
deflate as `/ws` frames). It is written against the streams as they exist (broker, fan-out helpers,
`Session`), in one place, so it can move onto a shared subscription core later.

Every event packet ends with the recovery offset (`core.socketio.format_offset`): the cursor of the last
event this adapter delivered on each topic it listens to, built once per event for all shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from openmanager.broker.base import Event
from openmanager.core.cursor import parse_cursor
from openmanager.core.encoding import encode, encode_event, splice_event
from openmanager.core.errors import ValidationError
from openmanager.core.filters import TopicFilter, filter_cost
from openmanager.core.protocol import SNAPSHOT_TOPICS, STATE_TOPICS
from openmanager.core.sioapi import StreamRequest, envelopes
from openmanager.core.socketio import event_message, format_offset
from openmanager.pipeline.session import Session, deliver
from openmanager.pipeline.shape import Shape, shape_id

if TYPE_CHECKING:
    from openmanager.config import Settings
    from openmanager.pipeline.subscriptions import Streams

V1 = "/v1"


def sio_sub(flt: TopicFilter, nsp: str, request: StreamRequest | None) -> str:
    """The `sub` of a Socket.IO subscription shape (its own ids: the frames differ from `/ws`)."""
    return shape_id((*flt.key, nsp, request.key if request is not None else None), "socketio")


class SioShape(Shape[Session]):
    """A subscription shape of one namespace: topic + filter (+ the original's stream and its priority
    and feature filters), whose frames are complete Engine.IO messages."""

    __slots__ = ("nsp", "request", "streams")

    def __init__(self, topic: str, flt: TopicFilter, nsp: str, request: StreamRequest | None,
                 streams: SioStreams) -> None:
        super().__init__(topic, flt, "json")
        self.nsp = nsp
        self.request = request
        self.streams = streams
        self.sub = sio_sub(flt, nsp, request)

    @property
    def latest(self) -> bool:
        """Conflated when behind: our namespace's state topics (the original's envelopes are ordered)."""
        return self.request is None and self.topic in STATE_TOPICS

    def packets(self, event: Event, data: Any, offset: str) -> list[str]:
        """This shape's packets for `event` whose filtered data is `data`."""
        if self.request is None:
            frame = (splice_event(self.sub, event.cursor, event.raw) if data is event.data
                     else encode_event(self.sub, event.cursor, data))
            return [event_message(V1, "event", frame, offset)]
        stream = self.request.stream
        return [event_message("/", stream, orjson.dumps(env).decode(), offset)
                for env in envelopes(self.request, data)]

    def event_frame(self, cursor: str, data: Any) -> str:
        """One merged update (a conflated entry written late), with the offset as of now."""
        return event_message(V1, "event", encode_event(self.sub, cursor, data), self.streams.offset)

    def resync_frame(self, cursor: str, data: Any) -> str:
        return self.event_frame(cursor, data)


class SioStreams:
    def __init__(self, service: Streams, settings: Settings) -> None:
        self.service = service  # the hub's broker, fan-out, snapshots, fleet view and statistics
        self.settings = settings
        self._shapes: dict[str, SioShape] = {}
        self._by_topic: dict[str, list[SioShape]] = {}
        self._stops: dict[str, Callable[[], None]] = {}
        self.cursors: dict[str, str] = {}
        self.offset = '""'  # format_offset(cursors) as a JSON string, rebuilt once per event

    # -- shapes and limits ------------------------------------------------------------------------

    def shape_for(self, topic: str, flt: TopicFilter, nsp: str, request: StreamRequest | None = None) -> SioShape:
        sub = sio_sub(flt, nsp, request)
        shape = self._shapes.get(sub)
        if shape is None:
            shape = self._shapes[sub] = SioShape(topic, flt, nsp, request, self)
            self._by_topic.setdefault(topic, []).append(shape)
            if topic not in self._stops:
                self.cursors.setdefault(topic, self.service.broker.head(topic))
                self._stops[topic] = self.service.broker.listen(topic, self.on_event)
        return shape

    def check_room(self, session: Session, flt: TopicFilter) -> None:
        """The limits of `/ws` for one more subscription: `subscriptions_per_connection` and
        `subscription_cost_budget` (ValidationError `too_many_subscriptions` / `cost_budget_exceeded`)."""
        settings = self.settings
        held = len(session.subs)
        if held >= settings.subscriptions_per_connection:
            raise ValidationError(f"this connection already has {held} subscriptions, the most allowed "
                                  f"(subscriptions_per_connection); unsubscribe one first",
                                  code="too_many_subscriptions")
        added = filter_cost(flt)
        spent = sum(filter_cost(s.filter) for s in session.subs.values())
        if added and spent + added > settings.subscription_cost_budget:
            raise ValidationError(f"this filter costs {added} and this connection's filters already cost {spent}: "
                                  f"more than its budget of {settings.subscription_cost_budget} "
                                  f"(subscription_cost_budget)", code="cost_budget_exceeded")

    # -- attach, replay, snapshot, teardown ---------------------------------------------------------

    async def subscribe(self, session: Session, shape: SioShape, since: str | None,
                        reply: Callable[[str, bool | None], None]) -> None:
        """Attach `session` to `shape`, and call `reply(cursor, recovered)` (recovered: None without
        `since`) before anything of the subscription is sent: then the missed events after `since` in
        order, or (not recovered, or no `since`) our namespace's snapshot, then live events; no gap, no
        duplicate. Nothing awaits between a snapshot and the attach."""
        broker = self.service.broker
        if since is None:
            cursor = broker.head(shape.topic)
            reply(cursor, None)
            self._attach(session, shape)
            if shape.request is None and shape.topic in SNAPSHOT_TOPICS:
                self._snapshot(session, shape, cursor)
            return
        self._attach(session, shape, hold=True)
        missed = await broker.replay(shape.topic, since)
        head = broker.head(shape.topic)
        if shape.sub not in session.subs:  # unsubscribed or closed meanwhile
            return
        reply(head, missed is not None)
        if missed is not None:
            self._release(session, shape, missed[-1].cursor if missed else since, missed)
            return
        if shape.request is None and shape.topic in SNAPSHOT_TOPICS:
            self._snapshot(session, shape, head)
        self._release(session, shape, head)

    def _attach(self, session: Session, shape: SioShape, *, hold: bool = False) -> None:
        shape.join(session)
        session.subs[shape.sub] = shape
        if hold:
            session.held[shape.sub] = []
            session.refresh_direct()

    def _snapshot(self, session: Session, shape: SioShape, cursor: str) -> None:
        data = shape.render_snapshot(self.service.topic_snapshot(shape.topic), self.service.view)
        body = encode({"type": "snapshot", "sub": shape.sub, "cursor": cursor, "data": data})
        session.send(event_message(V1, "snapshot", body))

    def _release(self, session: Session, shape: SioShape, after: str, replay: Sequence[Event] = ()) -> None:
        """Deliver the replayed events, then the live ones held meanwhile that are after `after`."""
        held = session.held.pop(shape.sub, None)
        session.refresh_direct()
        for event in replay:
            data = self._render(shape, event)
            if data is not None:
                for packet in shape.packets(event, data, self.offset):
                    self._offer(session, shape, event.cursor, data, packet)
        floor = parse_cursor(after)
        for cursor, data, frame in held or ():
            c = parse_cursor(cursor)
            if floor is not None and c is not None and c.epoch == floor.epoch and c.seq <= floor.seq:
                continue
            self._offer(session, shape, cursor, data, frame)

    @staticmethod
    def _offer(session: Session, shape: SioShape, cursor: str, data: Any, frame: str | bytes) -> None:
        if shape.latest and data is not None:
            session.send_latest(shape.sub, cursor, data, frame)
        else:
            session.send_ordered(shape, cursor, frame)

    def detach(self, session: Session, shape: SioShape) -> None:
        shape.leave(session)
        session.subs.pop(shape.sub, None)
        session.held.pop(shape.sub, None)
        session.refresh_direct()
        if not shape.sessions:
            self._drop(shape)

    def detach_all(self, session: Session) -> None:
        for shape in list(session.subs.values()):
            if isinstance(shape, SioShape):
                self.detach(session, shape)

    def _drop(self, shape: SioShape) -> None:
        self._shapes.pop(shape.sub, None)
        shapes = self._by_topic.get(shape.topic, [])
        if shape in shapes:
            shapes.remove(shape)
        if not shapes:
            self._by_topic.pop(shape.topic, None)
            self.cursors.pop(shape.topic, None)
            stop = self._stops.pop(shape.topic, None)
            if stop is not None:
                stop()

    def close(self) -> None:
        for stop in self._stops.values():
            stop()
        self._stops.clear()

    # -- live events ------------------------------------------------------------------------------

    def _render(self, shape: SioShape, event: Event) -> Any | None:
        return event.data if shape.trivial else shape.render(event, self.service.view)

    def on_event(self, event: Event) -> None:
        """One packet per shape (per envelope, for the original's streams), to all its sessions. The pass
        counts in the hub's fan-out statistics and is reported as a burst to the WebSocket heartbeat
        (`FanOut.on_burst`), which keeps its pings out of it, as for `/ws`."""
        started = time.perf_counter()
        self.cursors[event.topic] = event.cursor
        offset = self.offset = orjson.dumps(format_offset(self.cursors)).decode()
        stats = self.service.stats
        delivered = False
        for shape in tuple(self._by_topic.get(event.topic, ())):
            members = shape.members
            if not members:
                continue
            data = self._render(shape, event)
            if data is None:
                continue
            latest = shape.latest
            for packet in shape.packets(event, data, offset):
                stats.frames_encoded += 1
                deliver(members, shape, event.cursor, data if latest else None, packet, stats, latest=latest)
                delivered = True
        elapsed = time.perf_counter() - started
        stats.observe_fanout(elapsed)
        fanout = self.service.fanout
        if delivered and fanout.on_burst is not None and elapsed >= fanout.burst_min_s:
            ended = time.monotonic()
            fanout.on_burst(ended - elapsed, ended)
