"""A subscription shape: topic + canonical filter + encoding, and the sessions that share it.

Its `sub` id is derived from that key alone (`shape_id`), so identical subscriptions on different
connections (and different hub processes) share it. The shape renders an event's data through its filter
and encodes frames in its wire format once for all its members; `FanOut` owns the shapes. The member type
is a parameter (`Shape[Session]`) so that this module needs nothing of `session`, which refers to shapes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import orjson

from openmanager.broker.base import Event
from openmanager.core.delta import DeltaEncoder
from openmanager.core.encoding import encode, encode_event, pack, pack_event
from openmanager.core.filters import (
    AlertsFilter,
    FleetView,
    LogsFilter,
    MetricsFilter,
    NotificationsFilter,
    TopicFilter,
)

__all__ = ["Shape", "shape_id"]

MemberT = TypeVar("MemberT", bound=Hashable)


def shape_id(key: tuple[object, ...], encoding: str) -> str:
    digest = hashlib.blake2b(orjson.dumps([list(key), encoding]), digest_size=8).hexdigest()
    return f"s{digest}"


class Shape(Generic[MemberT]):
    """One distinct subscription shape and the sessions that share it."""

    __slots__ = ("_base_frame", "_members", "_timer", "binary", "delta", "encoding", "filter", "pending",
                 "pending_cursor", "pending_ts", "sessions", "sub", "topic")

    def __init__(self, topic: str, flt: TopicFilter, encoding: str) -> None:
        self.topic = topic
        self.filter = flt
        self.encoding = encoding
        self.sub = shape_id(flt.key, encoding)
        self.sessions: dict[MemberT, None] = {}  # insertion-ordered set; change it through join / leave
        self._members: tuple[MemberT, ...] | None = ()
        self.pending: dict[str, dict[str, Any]] = {}  # interval shapes: latest per server
        self.pending_cursor = ""
        self.pending_ts = 0
        self._timer: asyncio.TimerHandle | None = None
        self.binary = encoding.endswith("msgpack")  # msgpack frames (the openmanager.v1.msgpack subprotocol)
        self.delta: DeltaEncoder | None = DeltaEncoder() if encoding.startswith("delta") else None
        self._base_frame: tuple[str, str | bytes] | None = None  # (base cursor, its snapshot message)

    def join(self, session: MemberT) -> None:
        self.sessions[session] = None
        self._members = None

    def leave(self, session: MemberT) -> None:
        if self.sessions.pop(session, False) is None:
            self._members = None

    @property
    def members(self) -> tuple[MemberT, ...]:
        """The sessions as a tuple, built once per change of membership rather than once per event: the
        fan-out iterates a snapshot (a delivery may close a session, which leaves the shape)."""
        members = self._members
        if members is None:
            members = self._members = tuple(self.sessions)
        return members

    def message(self, message: dict[str, Any]) -> str | bytes:
        """Any message in this shape's wire format."""
        return pack(message) if self.binary else encode(message)

    def event_frame(self, cursor: str, data: Any) -> str | bytes:
        return pack_event(self.sub, cursor, data) if self.binary else encode_event(self.sub, cursor, data)

    def delta_snapshot(self, full: dict[str, Any], cursor: str) -> tuple[str, dict[str, Any]]:
        """(cursor, data) of the snapshot a `delta` client starts from: the shape's base, seeded from the
        full snapshot `full` (as of `cursor`) when the shape has sent nothing yet."""
        assert self.delta is not None
        if not self.delta.seeded:
            self.delta.seed(cursor, full)
        return self.delta.cursor, self.delta.snapshot()

    def base_snapshot_frame(self) -> str | bytes:
        """The `snapshot` message of a seeded `delta` shape's base, encoded once per base cursor: every client
        that subscribes (or resynchronises) between two events gets the same object, so a thousand clients
        coming back at once cost one encoding, and one frame (`core.wsframe.WireCache`), per event."""
        delta = self.delta
        assert delta is not None
        cached = self._base_frame
        if cached is None or cached[0] != delta.cursor:  # the base moves only with its cursor (DeltaEncoder)
            frame = self.message({"type": "snapshot", "sub": self.sub, "cursor": delta.cursor,
                                  "data": delta.snapshot()})
            cached = self._base_frame = (delta.cursor, frame)
        return cached[1]

    def resync_frame(self, cursor: str, data: Any) -> str | bytes:
        """What a client that fell behind gets instead of the updates merged while it was behind: the merged
        event, or for a `delta` shape a fresh snapshot of the base (merged deltas cannot be applied)."""
        if self.delta is not None:
            return self.base_snapshot_frame()
        return self.event_frame(cursor, data)

    @property
    def trivial(self) -> bool:
        """True when the shape passes every event through unchanged."""
        f = self.filter
        if isinstance(f, MetricsFilter):
            m = f.matcher
            return not (m.globs or m.tags or f.metrics or f.where or f.interval_ms or f.series)
        if isinstance(f, LogsFilter):
            return not (f.matcher.globs or f.contains) and f.level.name == "DEBUG"
        if isinstance(f, AlertsFilter):
            return f.trivial
        return not isinstance(f, NotificationsFilter)

    def render(self, event: Event, view: FleetView) -> Any | None:
        """The shape's view of `event`'s data, or None when nothing of it matches."""
        f = self.filter
        if isinstance(f, MetricsFilter):
            servers = f.select(event.data["servers"], view, event.data["ts"])
            return {"ts": event.data["ts"], "servers": servers} if servers else None
        if isinstance(f, LogsFilter):
            records = f.select(event.data["records"], view)
            return {"records": records} if records else None
        if isinstance(f, AlertsFilter):
            return event.data if f.accepts(event.data["alert"], view) else None
        if isinstance(f, NotificationsFilter):
            return event.data if f.accepts(event.data["notification"]) else None
        return event.data

    def render_snapshot(self, data: dict[str, Any], view: FleetView) -> dict[str, Any]:
        f = self.filter
        if isinstance(f, MetricsFilter):
            return {"ts": data["ts"], "servers": f.select(data["servers"], view, data["ts"])}
        if isinstance(f, AlertsFilter):
            return {"alerts": [a for a in data["alerts"] if f.accepts(a, view)]}
        return data
