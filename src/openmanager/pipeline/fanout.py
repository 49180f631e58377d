"""Fan-out: one encoded frame per event and subscription shape, the same string to every session.

A *shape* is topic + canonical filter + encoding. Its `sub` id is derived from that key alone, so
identical subscriptions on different connections (and different hub processes) share it. Per event,
each shape of the topic filters the data once, encodes one frame, and offers that same frame to each
of its sessions (`session.deliver`); per-session work is a few flag checks and a write, or a
non-blocking queue offer.

Shapes whose filter names exact servers (`TopicFilter.server_ids`: a dashboard's per-server view) are
indexed by those ids: an event that maps servers (`metrics`) visits the shapes that name one of its
servers and the shapes that name none, not every shape of the topic. With 1,000 agents sending one
server per event and 500 per-server views, that is a few shapes per event instead of 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openmanager.broker.base import Broker, Event
from openmanager.core.cursor import parse_cursor
from openmanager.core.encoding import splice_event, sse_body, sse_body_raw
from openmanager.core.filters import FleetView, TopicFilter
from openmanager.core.outbound import Conflated
from openmanager.core.protocol import STATE_TOPICS
from openmanager.pipeline.session import Session, deliver
from openmanager.pipeline.shape import Shape, shape_id
from openmanager.pipeline.stats import HubStats

log = logging.getLogger(__name__)
SLOW_FANOUT_S = 0.1
BURST_MIN_S = 0.001
"""Passes shorter than this are not reported to `on_burst`: too short for upkeep to collide with."""


class FanOut:
    def __init__(self, broker: Broker, view: FleetView, stats: HubStats) -> None:
        self.broker = broker
        self.view = view
        self.stats = stats
        self.on_burst: Callable[[float, float], None] | None = None
        """Told `(started, ended)` (`time.monotonic()`) after each pass that offered a frame to some
        session and took at least `burst_min_s`: the heartbeat times its pings between such bursts
        (`gateway.wsfast.SharedHeartbeat.fanout_burst`)."""
        self.burst_min_s = BURST_MIN_S
        self._shapes: dict[str, Shape[Session]] = {}
        self._by_topic: dict[str, list[Shape[Session]]] = {}  # every shape, in the order made
        self._general: dict[str, list[Shape[Session]]] = {}  # shapes that name no exact servers
        self._by_server: dict[str, dict[str, list[Shape[Session]]]] = {}  # topic → server id → shapes naming it
        self._order: dict[str, int] = {}  # shape sub → when it was made (candidates keep that order)
        self._made = 0
        self._stops: dict[str, Callable[[], None]] = {}

    def shapes(self) -> list[Shape[Session]]:
        return list(self._shapes.values())

    def shape_for(self, topic: str, flt: TopicFilter, encoding: str = "json") -> Shape[Session]:
        """The shape for this subscription, created (and wired to the broker) on first use."""
        sub = shape_id(flt.key, encoding)
        shape = self._shapes.get(sub)
        if shape is None:
            shape = self._shapes[sub] = Shape(topic, flt, encoding)
            self._by_topic.setdefault(topic, []).append(shape)
            self._made += 1
            self._order[sub] = self._made
            ids = flt.server_ids
            if ids is None:
                self._general.setdefault(topic, []).append(shape)
            else:
                index = self._by_server.setdefault(topic, {})
                for sid in ids:
                    index.setdefault(sid, []).append(shape)
            if topic not in self._stops:
                self._stops[topic] = self.broker.listen(topic, self.on_event)
            if flt.interval_ms:
                self._schedule_flush(shape)
        return shape

    def attach(self, session: Session, shape: Shape[Session], *, hold: bool = False) -> None:
        """Add `session` to `shape`. With `hold`, live events are kept back (in order, bounded by the time
        the caller takes) until `release`: attach before awaiting a replay, so nothing published meanwhile
        is lost."""
        shape.join(session)
        session.subs[shape.sub] = shape
        if hold:
            session.held[shape.sub] = []
            session.refresh_direct()

    def release(self, session: Session, shape: Shape[Session], after: str, replay: Sequence[Event] = ()) -> None:
        """End `attach(hold=True)`: deliver the missed events `replay` (see `replay`), then the live events
        held meanwhile, except those at or before the cursor `after` (the last replayed event, or the
        position of the snapshot sent): no gap, no duplicate."""
        held = session.held.pop(shape.sub, None)
        session.refresh_direct()
        if replay:
            self.replay(session, shape, replay)
        if not held:
            return
        floor = parse_cursor(after)
        for cursor, data, frame in held:
            c = parse_cursor(cursor)
            if floor is not None and c is not None and c.epoch == floor.epoch and c.seq <= floor.seq:
                continue
            if data is None:
                session.send_ordered(shape, cursor, frame)
            else:
                session.send_latest(shape.sub, cursor, data, frame)

    def detach(self, session: Session, shape: Shape[Session]) -> None:
        shape.leave(session)
        session.subs.pop(shape.sub, None)
        session.held.pop(shape.sub, None)
        session.refresh_direct()
        if not shape.sessions:
            self._drop(shape)

    def detach_all(self, session: Session) -> None:
        for shape in list(session.subs.values()):
            self.detach(session, shape)

    def _drop(self, shape: Shape[Session]) -> None:
        self._shapes.pop(shape.sub, None)
        self._order.pop(shape.sub, None)
        shapes = self._by_topic.get(shape.topic, [])
        if shape in shapes:
            shapes.remove(shape)
        ids = shape.filter.server_ids
        if ids is None:
            general = self._general.get(shape.topic, [])
            if shape in general:
                general.remove(shape)
        else:
            index = self._by_server.get(shape.topic, {})
            for sid in ids:
                named = index.get(sid)
                if named is not None and shape in named:
                    named.remove(shape)
                    if not named:
                        del index[sid]
        if shape._timer is not None:
            shape._timer.cancel()
            shape._timer = None
        if not shapes:
            self._by_topic.pop(shape.topic, None)
            self._general.pop(shape.topic, None)
            self._by_server.pop(shape.topic, None)
            stop = self._stops.pop(shape.topic, None)
            if stop is not None:
                stop()

    def frame_for(self, shape: Shape[Session], event: Event) -> tuple[Any, str | bytes] | None:
        """The shape's data and encoded event frame, or None when the event does not concern it."""
        sse = shape.encoding == "sse"
        if shape.trivial and shape.delta is None and not shape.binary:
            if sse:
                return event.data, sse_body_raw(shape.topic, event.raw)
            return event.data, splice_event(shape.sub, event.cursor, event.raw)
        data = event.data if shape.trivial else shape.render(event, self.view)
        if data is None:
            return None
        return data, self.encode(shape, event.cursor, data)

    def encode(self, shape: Shape[Session], cursor: str, data: Any) -> str | bytes:
        """The event frame of `data`; for a `delta` shape, of its delta (which moves the shape's base)."""
        if shape.encoding == "sse":
            return sse_body(shape.topic, data)
        if shape.delta is not None:
            data = shape.delta.step(cursor, data)
        return shape.event_frame(cursor, data)

    def replay(self, session: Session, shape: Shape[Session], events: Sequence[Event]) -> None:
        """Deliver missed events to one (attached) session as live delivery would: every frame of an
        ordered topic; state topics through the session's conflation (so a long absence cannot overflow
        its queue); an `interval` shape's replay collapsed into one update per server."""
        if shape.filter.interval_ms:
            merged: Conflated | None = None
            for event in events:
                data = shape.render(event, self.view)
                if data is None:
                    continue
                if merged is None:
                    merged = Conflated(shape.sub, event.cursor, data, shape.topic)
                else:
                    merged.merge(event.cursor, data)
            if merged is not None:
                frame = self.encode(shape, merged.cursor, merged.data)
                session.send_latest(shape.sub, merged.cursor, merged.data, frame)
            return
        for event in events:
            rendered = self.frame_for(shape, event)
            if rendered is None:
                continue
            data, frame = rendered
            if shape.topic in STATE_TOPICS:
                session.send_latest(shape.sub, event.cursor, data, frame)
            else:
                session.send_ordered(shape, event.cursor, frame)

    def on_event(self, event: Event) -> None:
        started = time.perf_counter()
        cpu_started = time.thread_time()
        delivered = False
        for shape in self.candidates(event):
            if shape.filter.interval_ms:
                self._accumulate(shape, event)
                continue
            rendered = self.frame_for(shape, event)
            if rendered is None:
                continue
            data, frame = rendered
            self.stats.frames_encoded += 1
            deliver(shape.members, shape, event.cursor, data, frame, self.stats,
                    latest=shape.topic in STATE_TOPICS)
            delivered = delivered or bool(shape.sessions)
        elapsed = time.perf_counter() - started
        self.stats.observe_fanout(elapsed)
        if delivered:
            self._report_burst(elapsed)
        if elapsed > SLOW_FANOUT_S:
            # Wall time far above CPU time means the process was not running (other load, CPU steal).
            log.warning(
                "slow fan-out of %s %s: %.0f ms wall, %.0f ms CPU",
                event.topic, event.cursor, elapsed * 1000, (time.thread_time() - cpu_started) * 1000,
            )

    def candidates(self, event: Event) -> Sequence[Shape[Session]]:
        """The shapes of the event's topic that may render something of it, in the order they were made:
        with a server index, those naming one of the event's servers and those naming none."""
        topic = event.topic
        index = self._by_server.get(topic)
        servers = event.data.get("servers") if index and isinstance(event.data, Mapping) else None
        if not isinstance(servers, Mapping):
            return tuple(self._by_topic.get(topic, ()))
        assert index is not None
        general = self._general.get(topic, ())
        named: dict[str, Shape[Session]] = {}
        for sid in servers:
            for shape in index.get(sid, ()):
                named[shape.sub] = shape
        if not named:
            return tuple(general)
        if not general and len(named) == 1:
            return tuple(named.values())
        order = self._order
        return sorted((*general, *named.values()), key=lambda shape: order[shape.sub])

    def _report_burst(self, elapsed: float) -> None:
        if self.on_burst is not None and elapsed >= self.burst_min_s:
            ended = time.monotonic()
            self.on_burst(ended - elapsed, ended)

    # interval shapes: at most one update per server per clock-aligned window, latest wins
    def _accumulate(self, shape: Shape[Session], event: Event) -> None:
        data = shape.render(event, self.view)
        if data is None:
            return
        shape.pending.update(data["servers"])
        shape.pending_cursor = event.cursor
        shape.pending_ts = int(data["ts"])

    def _schedule_flush(self, shape: Shape[Session]) -> None:
        interval = shape.filter.interval_ms
        now_ms = time.time() * 1000
        delay = (interval - now_ms % interval) / 1000
        loop = asyncio.get_running_loop()
        shape._timer = loop.call_later(delay, self._flush, shape)

    def _flush(self, shape: Shape[Session]) -> None:
        if shape.sub not in self._shapes:
            return
        if shape.pending:
            started = time.perf_counter()
            servers, shape.pending = shape.pending, {}
            data = {"ts": shape.pending_ts, "servers": servers}
            frame = self.encode(shape, shape.pending_cursor, data)
            self.stats.frames_encoded += 1
            deliver(shape.members, shape, shape.pending_cursor, data, frame, self.stats, latest=True)
            self._report_burst(time.perf_counter() - started)
        self._schedule_flush(shape)


__all__ = ["FanOut", "Shape", "shape_id"]
