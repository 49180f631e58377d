"""One session's subscriptions, sans I/O: subscribe, resume or snapshot, unsubscribe, teardown.

Every stream endpoint (`/ws`, `/sse`, and any later one) drives this same sequence; only the awaiting of a
replay and the writing of frames stay in the endpoint:

1. `Subscriptions.begin(request)` checks the connection's limits, finds the shape, and attaches the
   session to it *holding* its live events (nothing of that shape reaches the session until step 3).
   It answers a `Pending`, or None when the session already had that subscription (answered at once).
2. The endpoint reads what each pending subscription missed: `Streams.replay(pending)`, the only step
   that may suspend (the Redis broker). A request that does not resume has nothing to read.
3. `Subscriptions.complete(pendings, replays)` queues, in this order: one reply per subscription
   (`Wire.subscribed`), for those not recovered a `Wire.reset` and their snapshots, then per
   subscription the replayed events and the live events held meanwhile, without those the replay or
   the snapshot already covered: no gap, no duplicate.

`Streams.subscribe` runs the three steps for one endpoint call. What goes on the wire is the `Wire`'s
choice (`MessageWire`: the `/ws` messages; `/sse` has its own); the frames are queued on the `Session`,
whose writer the endpoint runs. `Streams` is the narrow service the root builds and the endpoints
receive: the fan-out, the broker's head and replay, the topics' snapshots, the limits and the registry
of open sessions, which it alone owns (the connections listing and the shutdown go through it). Tests
drive all of it over the in-memory broker, no socket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol

from openmanager.broker.base import Broker, Event
from openmanager.core.encoding import encode, pack
from openmanager.core.errors import OpenManagerError, ValidationError
from openmanager.core.filters import FleetView, TopicFilter
from openmanager.core.outbound import Entry
from openmanager.core.protocol import SNAPSHOT_TOPICS, TOPICS
from openmanager.core.rules import FILTER_LIMITS, Limits
from openmanager.pipeline.fanout import FanOut
from openmanager.pipeline.session import QueueLimits, Session
from openmanager.pipeline.shape import Shape, shape_id
from openmanager.pipeline.stats import HubStats

__all__ = [
    "ENCODINGS",
    "MessageWire",
    "Pending",
    "ProtocolError",
    "Streams",
    "SubscribeRequest",
    "SubscriptionLimits",
    "Subscriptions",
    "Wire",
    "subscribe_since",
    "subscribe_target",
]

ENCODINGS = ("json", "delta")
"""The encodings a subscribe message may ask for (the wire format, JSON or msgpack, is the connection's)."""


class ProtocolError(OpenManagerError):
    """A client message the protocol does not allow (its `code` says which rule)."""

    code = "invalid_message"


def subscribe_target(msg: Mapping[str, Any], *, binary: bool = False) -> tuple[str, str]:
    """`(topic, shape encoding)` of a subscribe message, in the connection's wire format (`binary`:
    msgpack). Raises ProtocolError `unknown_topic`, ValidationError `invalid_encoding`."""
    topic = msg.get("topic")
    if not isinstance(topic, str) or topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic!r} (topics: {', '.join(TOPICS)})", code="unknown_topic")
    encoding = msg.get("encoding", "json")
    if encoding not in ENCODINGS:
        raise ValidationError(f"unknown encoding {encoding!r} (json, delta)", code="invalid_encoding")
    if encoding == "delta" and topic != "metrics":
        raise ValidationError("the delta encoding is for the metrics topic", code="invalid_encoding")
    if binary:  # the wire format is part of the shape: one encoded frame per shape
        encoding = "msgpack" if encoding == "json" else "delta+msgpack"
    return topic, encoding


def subscribe_since(msg: Mapping[str, Any]) -> str | None:
    """The cursor a subscribe message resumes from, or None. Raises ValidationError `invalid_cursor`."""
    since = msg.get("since")
    if since is not None and not isinstance(since, str):
        raise ValidationError("since must be a cursor string", code="invalid_cursor")
    return since


@dataclass(frozen=True, slots=True)
class SubscriptionLimits:
    """What one connection may hold: `per_connection` subscriptions whose filters cost at most
    `cost_budget` together (per server evaluation: `core.rules.limits.cost`), each `where` within
    `filter_limits`."""

    per_connection: int = 128
    cost_budget: int = 10_000
    filter_limits: Limits = FILTER_LIMITS

    def check_room(self, held: Sequence[TopicFilter], added: TopicFilter) -> None:
        """Whether a connection holding `held` may add `added`. Raises ValidationError
        (`too_many_subscriptions`, `cost_budget_exceeded`) otherwise."""
        if len(held) >= self.per_connection:
            raise ValidationError(
                f"this connection already has {len(held)} subscriptions, the most allowed "
                f"(subscriptions_per_connection); unsubscribe one first",
                code="too_many_subscriptions",
            )
        cost = added.cost
        if cost:
            spent = sum(f.cost for f in held)
            if spent + cost > self.cost_budget:
                raise ValidationError(
                    f"this filter costs {cost} and this connection's filters already cost {spent}: "
                    f"more than its budget of {self.cost_budget} "
                    f"(subscription_cost_budget); unsubscribe one or use shorter windows",
                    code="cost_budget_exceeded",
                )

    def check_count(self, count: int) -> None:
        """A stream that opens `count` subscriptions at once (`/sse`). Raises `too_many_subscriptions`."""
        if count > self.per_connection:
            raise ValidationError(f"at most {self.per_connection} topics per stream "
                                  f"(subscriptions_per_connection)", code="too_many_subscriptions")

    def check_cost(self, filters: Sequence[TopicFilter]) -> None:
        """Filters opened together (`/sse`). Raises `cost_budget_exceeded`."""
        spent = sum(f.cost for f in filters)
        if spent > self.cost_budget:
            raise ValidationError(f"these filters cost {spent}, more than a connection's budget of "
                                  f"{self.cost_budget} (subscription_cost_budget); use shorter windows",
                                  code="cost_budget_exceeded")


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """One subscription asked for: `encoding` is the shape's (json, delta, msgpack, delta+msgpack, sse);
    `since` the cursor to resume after (None: start from now, with a snapshot); `id` the client's
    request id, echoed in the reply."""

    topic: str
    filter: TopicFilter
    encoding: str = "json"
    since: str | None = None
    id: Any = None


@dataclass(slots=True)
class Pending:
    """A subscription attached with its live events held, waiting for `Subscriptions.complete`."""

    shape: Shape[Session]
    request: SubscribeRequest

    @property
    def since(self) -> str | None:
        """The cursor to replay after, or None when nothing is to be replayed: a fresh subscription, or a
        `delta` one (its resume always starts from a fresh snapshot)."""
        return self.request.since if self.shape.delta is None else None


class Wire(Protocol):
    """How an endpoint words the subscription sequence. Each method answers what to queue on the session
    (a frame, or an entry the session renders at write time), or None for nothing."""

    def subscribed(self, shape: Shape[Session], request: SubscribeRequest, cursor: str,
                   recovered: bool | None) -> Entry | None:
        """The reply to `request`: live from `cursor` on; `recovered` tells whether the resume asked
        for got every missed event (None: none was asked for, or the subscription already existed)."""

    def reset(self, topics: list[str]) -> Entry | None:
        """Before the snapshots: these topics start over (not recovered, or not resumed)."""

    def snapshot(self, shape: Shape[Session], cursor: str, state: Callable[[], dict[str, Any]]) -> Entry | None:
        """The shape's view of its topic's state as of `cursor`; `state()` renders it (called only when the
        wire has no shared frame for it)."""


class MessageWire:
    """The `/ws` protocol's messages (`subscribed`, `snapshot`), in the connection's wire format.
    Stateless: `MessageWire.JSON` and `MessageWire.MSGPACK` serve every connection."""

    JSON: ClassVar[MessageWire]
    MSGPACK: ClassVar[MessageWire]

    __slots__ = ("binary",)

    def __init__(self, *, binary: bool = False) -> None:
        self.binary = binary

    def reply(self, message: dict[str, Any]) -> str | bytes:
        """Any reply in the connection's wire format (JSON text, or msgpack binary)."""
        return pack(message) if self.binary else encode(message)

    def subscribed(self, shape: Shape[Session], request: SubscribeRequest, cursor: str,
                   recovered: bool | None) -> Entry | None:
        reply: dict[str, Any] = {"type": "subscribed", "id": request.id, "sub": shape.sub,
                                 "topic": shape.topic, "cursor": cursor}
        if recovered is not None:
            reply["recovered"] = recovered
        return self.reply(reply)

    def reset(self, topics: list[str]) -> Entry | None:
        return None  # each `subscribed` reply says `recovered: false`

    def snapshot(self, shape: Shape[Session], cursor: str, state: Callable[[], dict[str, Any]]) -> Entry | None:
        if shape.delta is not None and shape.delta.seeded:  # the shape's base, encoded once per event
            return shape.base_snapshot_frame()
        data = state()
        if shape.delta is not None:
            cursor, data = shape.delta_snapshot(data, cursor)
        return shape.message({"type": "snapshot", "sub": shape.sub, "cursor": cursor, "data": data})


MessageWire.JSON = MessageWire()
MessageWire.MSGPACK = MessageWire(binary=True)


class Streams:
    """The subscription service the stream endpoints receive instead of the hub: their sessions'
    registry, the fan-out's shapes, the broker's head and replay, the topics' snapshots, the limits.

    `snapshot(topic)` answers a topic's current state (a `KeyError` for a topic without one); `view`
    is the fleet the filters consult. The registry of open sessions is this object's alone: endpoints
    `open` and `close` theirs, the connections listing reads `connections()`, the shutdown calls
    `close_all`."""

    def __init__(
        self,
        fanout: FanOut,
        broker: Broker,
        snapshot: Callable[[str], dict[str, Any]],
        view: FleetView,
        stats: HubStats,
        *,
        limits: SubscriptionLimits | None = None,
        queue_limits: QueueLimits | None = None,
        heartbeat_ms: int = 15_000,
    ) -> None:
        self.fanout = fanout
        self.broker = broker
        self._snapshot = snapshot
        self.view = view
        self.stats = stats
        self.limits = limits or SubscriptionLimits()
        self.queue_limits = queue_limits or QueueLimits()
        self.heartbeat_ms = heartbeat_ms
        self._sessions: dict[str, Session] = {}

    def open(self, session: Session) -> None:
        """Register an admitted session (listed, counted by transport, closed at shutdown)."""
        self._sessions[session.id] = session
        connections = self.stats.connections
        connections[session.transport] = connections.get(session.transport, 0) + 1

    def close(self, session: Session) -> None:
        """Leave every fan-out subscription of `session` and unregister it. Idempotent. (An endpoint with
        shapes of its own, `/socket.io/`, leaves those first.)"""
        self.fanout.detach_all(session)
        if self._sessions.pop(session.id, None) is not None:
            self.stats.connections[session.transport] -= 1

    def open_sessions(self) -> list[Session]:
        """The registered sessions, oldest first (a copy)."""
        return list(self._sessions.values())

    def connections(self) -> list[dict[str, Any]]:
        """The open sessions as `GET /api/v1/connections` lists them."""
        return [session.describe() for session in self._sessions.values()]

    def close_all(self, code: int, reason: str) -> None:
        """Ask every open session to close with `code` (e.g. 1012 at shutdown); each endpoint then ends
        its connection and unregisters the session."""
        for session in list(self._sessions.values()):
            session.close(code, reason)

    def head(self, topic: str) -> str:
        return self.broker.head(topic)

    async def replay(self, pending: Pending) -> list[Event] | None:
        """What `pending` missed since its cursor (None: cannot be recovered, or nothing was asked)."""
        since = pending.since
        return None if since is None else await self.broker.replay(pending.shape.topic, since)

    def topic_snapshot(self, topic: str) -> dict[str, Any]:
        """`topic`'s current state, unfiltered (a `KeyError` for a topic without one)."""
        return self._snapshot(topic)

    def snapshot(self, shape: Shape[Session]) -> dict[str, Any]:
        """`shape`'s view of its topic's current state."""
        return shape.render_snapshot(self._snapshot(shape.topic), self.view)

    def subscriptions(self, session: Session, wire: Wire) -> Subscriptions:
        return Subscriptions(session, self, wire)

    async def subscribe(self, subs: Subscriptions, requests: Sequence[SubscribeRequest]) -> None:
        """Open `requests` on `subs`'s session as one step: begin all, read their replays, complete.
        Errors of `begin` (limits) are raised before anything is attached for the failing request;
        the ones begun before it are completed first."""
        pendings: list[Pending] = []
        try:
            for request in requests:
                pending = subs.begin(request)
                if pending is not None:
                    pendings.append(pending)
        finally:
            if pendings:
                replays = [await self.replay(p) for p in pendings]
                subs.complete(pendings, replays)


@dataclass(slots=True, eq=False)
class Subscriptions:
    """The subscription state machine of one session (see the module's docstring). Synchronous: between
    `begin` and `complete` the caller may await (the replay); live events wait, held, meanwhile."""

    session: Session
    streams: Streams
    wire: Wire

    def _out(self, entry: Entry | None) -> None:
        if entry is None:
            return
        if isinstance(entry, str | bytes):
            self.session.send(entry)
        else:
            self.session.enqueue(entry)

    def begin(self, request: SubscribeRequest) -> Pending | None:
        """Attach `request`'s shape, holding its live events; None when the session already has it (its
        reply, live from now, is queued at once). Raises ValidationError for the connection's limits."""
        session, streams = self.session, self.streams
        sub = shape_id(request.filter.key, request.encoding)
        held = session.subs.get(sub)
        if held is not None:
            self._out(self.wire.subscribed(held, request, streams.head(held.topic), None))
            return None
        streams.limits.check_room([s.filter for s in session.subs.values()], request.filter)
        shape = streams.fanout.shape_for(request.topic, request.filter, request.encoding)
        streams.fanout.attach(session, shape, hold=True)
        return Pending(shape, request)

    def complete(self, pendings: Sequence[Pending], replays: Sequence[list[Event] | None]) -> None:
        """End `begin` for `pendings`, given what each missed (`replays`, in the same order; None: not
        recovered). Queues the replies, a reset and snapshots for what is not recovered, then releases
        each subscription's replay and held events. A pending that is no longer held (the session left
        it, or closed, meanwhile) is skipped."""
        streams, wire = self.streams, self.wire
        done: list[tuple[Pending, list[Event] | None, str]] = []
        for pending, missed in zip(pendings, replays, strict=True):
            if pending.shape.sub not in self.session.held:
                continue
            head = streams.head(pending.shape.topic)
            asked = pending.request.since is not None
            self._out(wire.subscribed(pending.shape, pending.request, head, (missed is not None) if asked else None))
            done.append((pending, missed, head))
        lost = [p for p, missed, _ in done if missed is None]
        if lost:
            self._out(wire.reset([p.shape.topic for p in lost]))
        for pending, missed, head in done:
            if missed is None and pending.shape.topic in SNAPSHOT_TOPICS:
                self._out(wire.snapshot(pending.shape, head, partial(streams.snapshot, pending.shape)))
        for pending, missed, head in done:
            if missed is None:
                after = head
            elif missed:
                after = missed[-1].cursor
            else:
                assert pending.request.since is not None
                after = pending.request.since
            streams.fanout.release(self.session, pending.shape, after, missed or ())

    def unsubscribe(self, sub: object) -> Shape[Session]:
        """Leave subscription `sub`; answers its shape. Raises ProtocolError `unknown_subscription`."""
        shape = self.session.subs.get(sub) if isinstance(sub, str) else None
        if shape is None:
            raise ProtocolError(f"no subscription {sub!r} on this connection", code="unknown_subscription")
        self.streams.fanout.detach(self.session, shape)
        return shape

    def close(self) -> None:
        """Teardown: leave every subscription (held ones included) and unregister the session."""
        self.streams.close(self.session)
