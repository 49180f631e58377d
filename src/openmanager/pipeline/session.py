"""A client session: its subscriptions and its bounded outbound queue.

Frames are offered synchronously by the fan-out (never awaiting). While the client keeps up, a frame is
written at once through the transport's `send_now` fast path; when the transport is paused the frame
waits in the queue and a writer drains it: either a task per session for its whole life (`run_writer`,
SSE) or, where the transport sets `on_pending`, a task started only while something is queued (`drain`,
WebSocket: a connection that keeps up holds no task of its own). For state topics (`metrics`, `fleet`,
`system`) a client that is behind gets one conflated update per subscription instead of a backlog;
ordered topics queue to the limit, then the session closes as a slow consumer (4008) and the client
resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openmanager.core.encoding import encode_event
from openmanager.core.outbound import Conflated, Entry, Framed, OutboundQueue
from openmanager.core.protocol import CloseCode
from openmanager.core.wsframe import wire_cache, wire_entry
from openmanager.pipeline.stats import HubStats, compression_ratio

if TYPE_CHECKING:
    from openmanager.pipeline.shape import Shape

CONFLATE_AFTER_ENTRIES = 32


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_messages: int = 4096
    max_bytes: int = 8 * 1024 * 1024


@dataclass(slots=True, eq=False)
class Session:
    user: str
    transport: str  # "ws" or "sse"
    remote: str
    stats: HubStats
    limits: QueueLimits = field(default_factory=QueueLimits)
    send_now: Callable[[str | bytes], bool] | None = None  # a synchronous write, when the transport offers one
    id: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    since: float = field(default_factory=time.time)
    subs: dict[str, Shape[Session]] = field(default_factory=dict)
    messages_sent: int = 0
    bytes_sent: int = 0
    deflate_saved: int = 0  # payload bytes permessage-deflate saved: the ratio is bytes_sent / (that minus this)
    conflations: int = 0
    rtt: Callable[[], float | None] | None = None  # the transport's last heartbeat round trip, in ms
    binary: bool = False  # msgpack frames (the openmanager.v1.msgpack subprotocol)
    close_code: int | None = None
    close_reason: str = ""
    busy: bool = False  # something is queued or an async write is in flight: new frames queue behind it
    held: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)  # sub -> live events held during a replay
    on_pending: Callable[[], None] | None = None  # called when something is queued or the session closes
    take_deflate_saved: Callable[[], int] | None = None
    """The transport's deflate savings on frames written through its own (async) send path since the
    last call, or None when it compresses nothing there; the fast paths count theirs from the wire cache."""
    direct: Any = field(init=False, default=None)
    """The transport (`write(bytes)`, `is_closing()`) while fan-out frames may go straight to it: it takes
    writes, and this session is open with nothing queued or in flight and no replay held. Recomputed by
    `refresh_direct` whenever one of those changes, so `deliver` checks one attribute per client."""
    wbits: int = field(init=False, default=0)  # the transport's deflate window (0: none)
    _transport: Any = field(init=False, default=None)
    _transport_ready: bool = field(init=False, default=False)
    queue: OutboundQueue = field(init=False)
    _conflated: dict[str, Conflated] = field(init=False, default_factory=dict)
    _wake: asyncio.Event | None = field(init=False, default=None)  # run_writer's, created when it starts

    def __post_init__(self) -> None:
        self.queue = OutboundQueue(max_messages=self.limits.max_messages, max_bytes=self.limits.max_bytes)

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def attach_transport(self, transport: Any, wbits: int, ready: bool) -> None:
        """Let `deliver` write a frame's WebSocket wire bytes (`core.wsframe.wire_of`, built once per
        frame and deflate window `wbits`) straight to `transport` while `direct` allows; the transport
        reports its readiness changes to `transport_ready`. A closed session ignores it."""
        if self.close_code is not None:
            return
        self._transport, self.wbits = transport, wbits
        self.transport_ready(ready)

    def transport_ready(self, ready: bool) -> None:
        self._transport_ready = ready
        self.refresh_direct()

    def refresh_direct(self) -> None:
        transport = self._transport
        self.direct = (
            transport
            if transport is not None and self._transport_ready and not self.busy and self.close_code is None
            and not self.held
            else None
        )

    def _lagging(self) -> bool:
        """Far enough behind that state-topic events merge instead of queueing: a short burst (a replay,
        an SSE writer that has not run yet) still gets every event."""
        q = self.queue
        return len(q) >= max(1, min(CONFLATE_AFTER_ENTRIES, q.max_messages // 4)) or q.bytes * 4 >= q.max_bytes

    def _write_now(self, frame: str | bytes) -> bool:
        """Write through the fast path when nothing is queued or in flight (order) and the transport
        takes it without waiting; False when the frame must be queued instead."""
        if self.send_now is not None and not self.busy and self.send_now(frame):
            self._sent(frame, direct=True)
            return True
        return False

    def _sent(self, frame: str | bytes, *, direct: bool) -> None:
        size = len(frame)
        self.messages_sent += 1
        self.bytes_sent += size
        stats = self.stats
        stats.messages_sent += 1
        stats.bytes_sent += size
        if direct:
            stats.direct_writes += 1
            if self.wbits:  # send_now wrote the cached wire form of this very frame
                saved = wire_cache.saved(frame, self.wbits)
                self.deflate_saved += saved
                stats.deflate_saved += saved
        elif self.take_deflate_saved is not None:
            saved = self.take_deflate_saved()
            self.deflate_saved += saved
            stats.deflate_saved += saved

    def compression_ratio(self) -> float:
        """Uncompressed payload bytes ÷ payload bytes actually written (1.0 when nothing was compressed)."""
        return compression_ratio(self.bytes_sent, self.deflate_saved)

    def send(self, frame: str | bytes) -> None:
        """Write or queue one encoded frame of an ordered stream (or a reply); never blocks.
        Overflow closes the session with 4008."""
        if self.close_code is not None:
            return
        if self._write_now(frame):
            return
        self.enqueue(frame)

    def frame_entry(self, topic: str, cursor: str, frame: str) -> Entry:
        """What waits in the queue for an event frame (a transport may need per-connection framing)."""
        return frame

    def _entry(self, topic: str, cursor: str, frame: str | bytes) -> Entry:
        return self.frame_entry(topic, cursor, frame) if isinstance(frame, str) else frame  # msgpack: as is

    def send_ordered(self, shape: Shape[Session], cursor: str, frame: str | bytes) -> None:
        """Deliver an ordered-topic event frame (never dropped; overflow closes with 4008)."""
        if self.close_code is not None:
            return
        if self.held and shape.sub in self.held:
            self.held[shape.sub].append((cursor, None, frame))
            return
        if self._write_now(frame):
            return
        self.enqueue(self._entry(shape.topic, cursor, frame))

    def send_latest(self, sub: str, cursor: str, data: dict[str, Any], frame: str | bytes) -> None:
        """Deliver a state-topic event: the shared `frame` while the client keeps up; once it is lagging,
        one conflated update per subscription that newer events merge into (latest value wins)."""
        if self.close_code is not None:
            return
        if self.held and sub in self.held:
            self.held[sub].append((cursor, data, frame))
            return
        pending = self._conflated.get(sub)
        if pending is not None:
            pending.merge(cursor, data)
            self.conflations += 1
            self.stats.conflations += 1
            return
        if self._write_now(frame):
            return
        shape = self.subs.get(sub)
        topic = shape.topic if shape else ""
        if not self._lagging():
            self.enqueue(self._entry(topic, cursor, frame))
            return
        entry = Conflated(sub, cursor, data, topic)
        if self.enqueue(entry):
            self._conflated[sub] = entry

    def enqueue(self, entry: Entry) -> bool:
        if not self.queue.offer(entry):
            self.stats.queue_drops += 1
            self.stats.slow_consumer_closes += 1
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        self.busy = True
        self.refresh_direct()
        self._signal()
        return True

    def _signal(self) -> None:
        """Wake whatever drains the queue: the `on_pending` hook and/or `run_writer`."""
        if self.on_pending is not None:
            self.on_pending()
        if self._wake is not None:
            self._wake.set()

    def close(self, code: int, reason: str = "") -> None:
        """Ask the writer to stop and close the transport with `code`; queued frames are discarded."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.direct = self._transport = None  # (the transport refers back to this session)
            self.queue.clear()
            self._conflated.clear()
            self._signal()

    def render(self, entry: Entry) -> str | bytes:
        """The bytes-on-the-wire text of a queued entry, at the moment it is written."""
        if isinstance(entry, Conflated):
            shape = self.subs.get(entry.sub)
            if shape is not None:  # its wire format; a `delta` shape resynchronises with a snapshot
                return shape.resync_frame(entry.cursor, entry.data)
            return encode_event(entry.sub, entry.cursor, entry.data)
        if isinstance(entry, Framed):
            return entry.body
        return entry

    async def drain(self, write: Callable[[Any], Awaitable[None]]) -> None:
        """Write what is queued, in order, until the queue is empty or the session closes. Entries queued
        while a write is in flight are written by the same call."""
        while len(self.queue) and self.close_code is None:
            entry = self.queue.pop()
            if isinstance(entry, Conflated):
                self._conflated.pop(entry.sub, None)
            frame = self.render(entry)
            await write(frame)
            self._sent(frame, direct=False)
        self.busy = False
        self.refresh_direct()

    async def run_writer(
        self, write: Callable[[Any], Awaitable[None]], *, idle_s: float | None = None, idle_frame: str = ""
    ) -> None:
        """Drain the queue into `write` until the session closes. With `idle_s`, writes `idle_frame`
        whenever nothing was written for that long (a heartbeat)."""
        wake = self._wake = asyncio.Event()
        wake.set()  # entries queued before the writer started
        while True:
            if idle_s is None:
                await wake.wait()
            else:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    async with asyncio.timeout(idle_s):
                        await wake.wait()
                except TimeoutError:
                    await write(idle_frame)
                    continue
            wake.clear()
            await self.drain(write)
            if self.close_code is not None:
                return

    def describe(self) -> dict[str, Any]:
        """The session as `GET /api/v1/connections` lists it."""
        return {
            "id": self.id,
            "user": self.user,
            "transport": self.transport,
            "remote": self.remote,
            "since": int(self.since * 1000),
            "subscriptions": [{"sub": s.sub, "topic": s.topic} for s in self.subs.values()],
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "compression_ratio": self.compression_ratio(),
            "queue_depth": len(self.queue),
            "queue_bytes": self.queue.bytes,
            "conflations": self.conflations,
            "rtt_ms": self.rtt() if self.rtt is not None else None,
        }


def deliver(sessions: Iterable[Session], shape: Shape[Session], cursor: str, data: Any, frame: str | bytes,
            stats: HubStats, *, latest: bool) -> None:
    """Offer one event frame of `shape` to each of `sessions`: `send_latest` (state topics, `latest`) or
    `send_ordered`. This is the fan-out's per-client loop, so the common case costs one attribute and two
    calls into the transport: a session whose `direct` transport is set (open, nothing queued, no replay
    held, the transport ready) gets the frame's wire bytes, built once per window size for the whole
    loop, written at once; anything else takes the full path."""
    size = len(frame)
    direct = 0
    saved_total = 0
    wires: dict[int, tuple[bytes, int]] = {}
    for session in sessions:
        transport = session.direct
        if transport is not None and not transport.is_closing():
            wbits = session.wbits
            form = wires.get(wbits)
            if form is None:
                form = wires[wbits] = wire_entry(frame, wbits)
            wire, saved = form
            transport.write(wire)
            session.messages_sent += 1
            session.bytes_sent += size
            session.deflate_saved += saved
            saved_total += saved
            direct += 1
        elif latest:
            session.send_latest(shape.sub, cursor, data, frame)
        else:
            session.send_ordered(shape, cursor, frame)
    if direct:
        stats.messages_sent += direct
        stats.bytes_sent += direct * size
        stats.deflate_saved += saved_total
        stats.direct_writes += direct
