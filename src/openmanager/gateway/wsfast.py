"""The fan-out fast path: uvicorn's sans-I/O WebSocket protocol with the per-connection work taken out.

`FastSendProtocol` is uvicorn's `websockets-sansio` protocol (passed as `ws=` to uvicorn) plus:

1. **Send now.** An ASGI scope extension `openmanager.send_now(payload) -> bool` writes one message at
   once — `str` as a text frame, `bytes` as a binary frame — or returns False (writing nothing) when it
   cannot: the transport is paused by backpressure, closing, or the handshake is not complete. The
   caller then queues the message for the async path, which waits for the transport. Those conditions
   are one flag, `ready`, recomputed by the events that change them (uvicorn's `handshake_complete`,
   `close_sent` and `disconnected` become properties that update it; pause/resume of writing; the
   peer's close frame), so the per-client check is one attribute.
2. **Encode once, write directly.** The fan-out hands the *same* payload object to every session of a
   subscription shape in one synchronous loop (`pipeline.session.deliver`). Its wire bytes — frame
   header, UTF-8 and, for connections that negotiated permessage-deflate, the compressed form — are
   built once per payload and window size (`core.wsframe`). A session bound with the scope extension
   `openmanager.bind_direct` keeps this transport in `Session.direct` while it may take frames at once
   (`ready` is reported to it on every change), so per connection what is left is one attribute,
   `is_closing()` and `transport.write()` of shared bytes.
3. **Compression once.** permessage-deflate is answered with `server_no_context_takeover` and
   `client_no_context_takeover` (overriding uvicorn's hard-coded factory, which keeps a compressor
   per connection); each message is compressed once per window size (`core.wsframe.deflate_message`),
   so every connection with the same window gets the same bytes; ordinary replies go through the same
   shared compressor. No connection keeps a compressor, and since the client gives up context takeover
   too, its inbound decompressor lives only while a message is decoded. Messages under
   `MIN_DEFLATE_BYTES` are sent uncompressed (RSV1 clear), which the RFC allows.
4. **One heartbeat for all, between the bursts.** Instead of two timers per connection (ping, pong
   deadline), one `SharedHeartbeat` per event loop visits a slice of the connections every tick: each
   connection is pinged once per interval with a ping frame shared by that tick, and closed (1011) at
   the first visit that finds its ping unanswered for `ping_timeout`. The fan-out reports its passes
   (`fanout_burst`), and a visit that would land in or next to a burst waits for the middle of the gap
   (`core.bursts`, less than 1.5 ticks): the clients answer their pings while they have nothing else
   to read, not while they are reading a burst whose latency counts.
5. **Pongs without the parser.** A heartbeat pong that arrives alone in a read while the frame parser
   waits between frames is recognised by its 10 bytes and matched against the ping in flight; anything
   else (a split pong, a pong after other bytes, bytes in the middle of a frame) goes to the parser.
6. **Less per connection.** uvicorn's `asyncio.Queue` of receive events (three deques) and its
   `asyncio.Event` for writability (a deque) become `Inbox` and `Flag`, small objects with the same
   methods, and `receive` awaits the inbox's future itself (one suspended frame fewer per connection); the
   handshake's request and response are dropped once the 101 is sent (including the one the handshake
   parser's suspended frame holds: the frame parser is restarted at the boundary).

This leans on uvicorn internals (`conn`, `conn.parser`, `transport`, `writable`, `close_sent`, `disconnected`,
`handshake_complete`, `scope`, `queue`, `read_paused`, `pending_ping_payload`, `ping_sent_at`,
`keepalive_timeout`), so
uvicorn's version is pinned; `tests/gateway/test_wsfast.py` and the integration tests cover the path.
It is one module of ~500 lines on purpose: every part above patches or serves the same uvicorn protocol
class, and split up they would each reach into the others' private state.
"""

from __future__ import annotations

import asyncio
import struct
import time
import typing
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import CONT, CTRL_OPCODES, Frame
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import ExtensionParameter

from openmanager.core.bursts import BurstRhythm
from openmanager.core.wsframe import MIN_DEFLATE_BYTES, deflate_message, wire_of

SEND_NOW = "openmanager.send_now"
BIND_DIRECT = "openmanager.bind_direct"
RTT = "openmanager.rtt_ms"
DEFLATE_SAVED = "openmanager.take_deflate_saved"


class ReadyListener(typing.Protocol):
    """What `bind_direct` reports to (`pipeline.session.Session`): every change of `ready`."""

    def transport_ready(self, ready: bool) -> None: ...


class SharedDeflate(PerMessageDeflate):
    """permessage-deflate without context takeover on either side, compressing through the shared
    compressor of its window size: the extension object holds no zlib state between messages. `saved`
    counts the payload bytes it saved since the session last took them (`take_saved`)."""

    saved = 0

    def encode(self, frame: Frame) -> Frame:
        if frame.opcode in CTRL_OPCODES:
            return frame
        if frame.opcode is CONT or not frame.fin:  # fragmented messages: the library's own path
            return super().encode(frame)
        if len(frame.data) < MIN_DEFLATE_BYTES:
            return frame
        data = deflate_message(bytes(frame.data), self.local_max_window_bits)
        self.saved += len(frame.data) - len(data)
        return Frame(frame.opcode, data, frame.fin, True, frame.rsv2, frame.rsv3)

    def take_saved(self) -> int:
        saved, self.saved = self.saved, 0
        return saved


class SharedDeflateFactory(ServerPerMessageDeflateFactory):
    """Accepts permessage-deflate with both `no_context_takeover` parameters in the answer."""

    def __init__(self) -> None:
        super().__init__(server_no_context_takeover=True, client_no_context_takeover=True)

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, ext = super().process_request_params(params, accepted_extensions)
        shared = SharedDeflate(
            ext.remote_no_context_takeover,
            ext.local_no_context_takeover,
            ext.remote_max_window_bits,
            ext.local_max_window_bits,
        )
        return response, shared


_SHARED_DEFLATE = (SharedDeflateFactory(),)
"""Every connection's offer of extensions: the factory keeps no state, so one serves them all."""


class Inbox:
    """uvicorn's queue of ASGI receive events, minus the three deques of `asyncio.Queue`: one list and
    one waiter (`FastSendProtocol.receive` is awaited by one task at a time). No coroutine of its own:
    `receive` awaits `arrival()` itself, so no extra frame stays suspended per connection."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def arrival(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future done when the next item is put (await it while `empty()`)."""
        waiter = self._waiter = loop.create_future()
        return waiter

    def pop(self) -> Any:
        return self._items.pop(0)


class Flag:
    """`asyncio.Event`'s `set` / `clear` / `is_set` / `wait` without a deque per instance."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        while not self._set:
            fut = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if self._waiters is not None and fut in self._waiters:
                    self._waiters.remove(fut)
        return True


class SharedHeartbeat:
    """Pings every registered connection once per `interval` from one timer per event loop.

    The connections are spread over `interval / tick` buckets visited in turn, one per tick; a
    connection joins the bucket visited last, so its first ping comes one interval after it opened.
    Visits are due one tick apart. One that falls in or next to a fan-out burst is put off to the
    middle of the next gap (`BurstRhythm`, for bursts at most 1.5 ticks apart), once, which does not
    move the visits due after it: each connection is pinged every `interval`, give or take 1.5 ticks.
    A connection whose ping is unanswered at its next visit but not yet `timeout` old is a suspect,
    checked again at every visit until it answers or is closed. The timer runs only while some
    connection is registered.

    `_by_loop` is a class-level registry, on purpose: uvicorn constructs each connection's protocol
    itself (`FastSendProtocol(config, server_state, app_state)`), so a connection finds its loop's
    schedule there, and the fan-out reports its bursts to it (`fanout_burst`) without holding a
    protocol. It holds one schedule per running loop and drops it when its last connection leaves."""

    _by_loop: dict[asyncio.AbstractEventLoop, SharedHeartbeat] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, timeout: float | None) -> None:
        self.loop = loop
        self.interval = interval
        self.timeout = timeout
        self.tick = min(1.0, interval / 4)
        self.buckets: list[dict[FastSendProtocol, None]] = [{} for _ in range(max(1, round(interval / self.tick)))]
        self.size = 0
        self._next = 0
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the next visit is due (loop time); putting a visit off does not move it
        self._put_off = False  # the pending visit was already put off to a quiet moment
        self._suspects: list[FastSendProtocol] = []
        self.bursts = BurstRhythm(max_period_s=1.5 * self.tick)

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop, interval: float, timeout: float | None) -> SharedHeartbeat:
        hb = cls._by_loop.get(loop)
        if hb is None or hb.interval != interval or hb.timeout != timeout:
            if hb is not None and hb.size:
                return hb  # one schedule per loop: the first configuration wins while it has connections
            hb = cls._by_loop[loop] = cls(loop, interval, timeout)
        return hb

    @classmethod
    def fanout_burst(cls, started: float, ended: float) -> None:
        """A fan-out pass on the running loop wrote from `started` to `ended` (`time.monotonic()`)."""
        hb = cls._by_loop.get(asyncio.get_running_loop())
        if hb is not None:
            hb.bursts.note(started, ended)

    def add(self, proto: FastSendProtocol) -> None:
        bucket = self.buckets[(self._next - 1) % len(self.buckets)]
        if proto not in bucket:
            bucket[proto] = None
            proto.heartbeat_bucket = bucket
            self.size += 1
        if self._timer is None:
            self._due = self.loop.time() + self.tick
            self._timer = self.loop.call_at(self._due, self._visit)

    def discard(self, proto: FastSendProtocol) -> None:
        bucket = proto.heartbeat_bucket
        if bucket is not None and bucket.pop(proto, False) is None:
            self.size -= 1
        proto.heartbeat_bucket = None
        if not self.size:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._by_loop.get(self.loop) is self:
                del self._by_loop[self.loop]

    def _visit(self) -> None:
        if not self._put_off:
            clock = time.monotonic()
            quiet = self.bursts.next_quiet(clock)
            if quiet > clock:
                self._put_off = True
                self._timer = self.loop.call_later(quiet - clock, self._visit)
                return
        self._put_off = False
        bucket = self.buckets[self._next]
        self._next = (self._next + 1) % len(self.buckets)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        payload = struct.pack("!I", self._seq)
        ping = b"\x89\x04" + payload  # FIN + PING, 4-byte payload, unmasked
        now = self.loop.time()
        timeout = self.timeout
        suspects, self._suspects = self._suspects, []
        for proto in suspects:
            if proto.heartbeat_bucket is not bucket and proto.beat(now, None, None, timeout):
                self._suspects.append(proto)
        for proto in tuple(bucket):
            if proto.beat(now, payload, ping, timeout):
                self._suspects.append(proto)
        self._due = max(self._due + self.tick, now)
        self._timer = self.loop.call_at(self._due, self._visit) if self.size else None


_AT_EOF = StreamReader.at_eof.__code__


def _at_frame_boundary(conn: ServerProtocol) -> bool:
    """True when the websockets frame parser is suspended between frames (in `StreamReader.at_eof`, with
    nothing buffered), so bytes handled outside it cannot be part of a frame it has begun."""
    gen: Any = conn.parser
    while gen is not None:
        inner = gen.gi_yieldfrom
        if inner is None:
            return gen.gi_code is _AT_EOF and not conn.reader.buffer
        gen = inner
    return False


class FastSendProtocol(WebSocketsSansIOProtocol):
    heartbeat_bucket: dict[FastSendProtocol, None] | None = None
    wbits = 0  # the server window of negotiated permessage-deflate; 0 when not negotiated
    ready = False
    """The handshake is complete, the transport takes writes, and no side has begun closing: `send_now`
    checks this one flag. It is recomputed by the events that change its parts (the three uvicorn flags
    below, pause/resume of writing, the peer's close frame), never polled."""
    _handshake_complete = False
    _close_sent = False
    _disconnected = False
    _peer_closed = False

    on_ready: ReadyListener | None = None
    """Told every recomputation of `ready` (see `bind_direct`)."""

    def _update_ready(self) -> None:
        writable = self.__dict__.get("writable")
        self.ready = ready = (
            self._handshake_complete
            and not self._close_sent
            and not self._disconnected
            and not self._peer_closed
            and writable is not None
            and writable.is_set()
        )
        on_ready = self.on_ready
        if on_ready is not None:
            on_ready.transport_ready(ready)

    @property
    def handshake_complete(self) -> bool:
        return self._handshake_complete

    @handshake_complete.setter
    def handshake_complete(self, value: bool) -> None:
        self._handshake_complete = value
        self._update_ready()

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @close_sent.setter
    def close_sent(self, value: bool) -> None:
        self._close_sent = value
        self._update_ready()

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    @disconnected.setter
    def disconnected(self, value: bool) -> None:
        self._disconnected = value
        self._update_ready()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._update_ready()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update_ready()

    def data_received(self, data: bytes) -> None:
        # The answer to a heartbeat ping, alone in its read while the frame parser waits for the next
        # frame, is taken here instead of by the parser (a generator per frame): at 10,000 clients these
        # are most of what the hub reads. A masked, final pong with a 4-byte payload is exactly 10 bytes.
        pending = self.pending_ping_payload
        if (
            pending is not None
            and len(data) == 10
            and data[0] == 0x8A  # FIN + PONG
            and data[1] == 0x84  # MASK + length 4
            and _at_frame_boundary(self.conn)
            and int.from_bytes(data[6:10], "big") ^ int.from_bytes(data[2:6], "big") == int.from_bytes(pending, "big")
        ):
            self.last_ping_rtt = time.monotonic() - self.ping_sent_at
            self.pending_ping_payload = None
            return
        super().data_received(data)

    def handle_pong(self, event: Any) -> None:
        # uvicorn's, timed by `time.monotonic()`: uvloop's `loop.time()` counts whole milliseconds, so a
        # round trip under 1 ms (any local client) measured 0.0, which `rtt_ms` cannot tell from "none yet".
        if self.pending_ping_payload is not None and bytes(event.data) == self.pending_ping_payload:
            self.last_ping_rtt = time.monotonic() - self.ping_sent_at
            self.pending_ping_payload = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.on_ready = None  # it refers to the session, which refers to the transport, which refers here

    def handle_close(self, event: Any) -> None:
        self._peer_closed = True  # nothing may follow our close reply
        self._update_ready()
        super().handle_close(event)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.on_ready = None  # an instance key before the dict is rebuilt at its final size (see `send`)
        if self.config.ws_per_message_deflate:  # replace uvicorn's per-connection deflate factory
            replaced = self.conn
            self.conn = ServerProtocol(
                extensions=_SHARED_DEFLATE, max_size=self.config.ws_max_size, logger=replaced.logger
            )
            replaced.parser.close()  # its parser refers back to it: free it now, not at a later GC

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        deflate = None
        for ext in self.conn.extensions:
            if isinstance(ext, SharedDeflate):
                self.wbits = ext.local_max_window_bits
                deflate = ext
        scope = getattr(self, "scope", None)
        if scope is not None:  # None when the handshake was refused
            scope["extensions"][SEND_NOW] = self.send_now
            scope["extensions"][BIND_DIRECT] = self.bind_direct
            scope["extensions"][RTT] = self.rtt_ms
            if deflate is not None:
                scope["extensions"][DEFLATE_SAVED] = deflate.take_saved

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self.request = self.response = None  # type: ignore[assignment]  # not needed after the 101
            # The handshake parser's frame keeps the request (headers and all) alive for the life of the
            # connection. The client sends no frame before it reads the 101, so with nothing buffered the
            # parser stands at a frame boundary and a fresh frame parser can take over from it.
            conn = self.conn
            if not conn.reader.buffer and conn.state is OPEN:
                conn.parser = Protocol.parse(conn)
                next(conn.parser)
            # uvicorn sets ~40 attributes, more than a shared-key instance dict holds, so the dict was
            # converted to a table sized for growth (128 slots); rebuilt key by key it fits in 64.
            self.__dict__ = dict(iter(self.__dict__.items()))

    async def receive(self) -> Any:
        """uvicorn's `receive`, awaiting the inbox's future itself: a connection's task waits here for
        hours, and each coroutine on its stack is a suspended frame kept per connection."""
        inbox: Inbox = self.queue  # type: ignore[assignment]
        while inbox.empty():
            await inbox.arrival(self.loop)
        message = inbox.pop()
        if self.read_paused and inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def send_now(self, payload: str | bytes) -> bool:
        """Write one message now (str: text, bytes: binary); False when the transport cannot take it
        without waiting. The same payload object sent to many connections is encoded once."""
        if not self.ready or self.transport.is_closing():
            return False
        self.transport.write(wire_of(payload, self.wbits))
        return True

    def bind_direct(self, listener: ReadyListener) -> tuple[Any, int, bool]:
        """For the fan-out's direct writes (`Session.attach_transport`): from now on `listener` hears of
        every change of `ready`; answers the transport, the deflate window and `ready` now."""
        self.on_ready = listener
        return self.transport, self.wbits, self.ready

    def rtt_ms(self) -> float | None:
        """Round-trip time of the last answered heartbeat ping, or None before the first one."""
        return round(self.last_ping_rtt * 1000, 3) if self.last_ping_rtt else None

    # keepalive: the shared schedule instead of uvicorn's two timers per connection
    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            SharedHeartbeat.for_loop(self.loop, self.ping_interval, self.ping_timeout).add(self)

    def stop_keepalive(self) -> None:
        super().stop_keepalive()
        if self.heartbeat_bucket is not None:
            hb = SharedHeartbeat._by_loop.get(self.loop)
            if hb is not None:
                hb.discard(self)
            else:
                self.heartbeat_bucket.pop(self, None)
                self.heartbeat_bucket = None

    def beat(self, now: float, payload: bytes | None, ping: bytes | None, timeout: float | None) -> bool:
        """One heartbeat visit: close (1011) when the last ping has gone unanswered for `timeout`, else
        ping (when given one) unless a ping is still in flight. True: a ping is in flight, not yet
        overdue (a suspect, to be checked again at the next visit)."""
        if self.close_sent or self.transport.is_closing():
            return False
        if self.pending_ping_payload is not None:
            if timeout is not None and now - self.ping_sent_at >= timeout:
                self.keepalive_timeout()
                return False
            return timeout is not None
        if payload is None or ping is None:
            return False
        self.pending_ping_payload = payload
        # The round trip's start, as precise as its end (`handle_pong`). `now` is `loop.time()`, the same
        # monotonic clock (asyncio: the same function; uvloop: counted in whole milliseconds), so the
        # timeout check above may compare the two.
        self.ping_sent_at = time.monotonic()
        self.transport.write(ping)
        return False
