"""The `/socket.io/` endpoint: Engine.IO 4 over WebSocket and HTTP long-polling (with the upgrade to
WebSocket), carrying Socket.IO 5 namespaces (`gateway.sio_namespaces`).

One `EngineSocket` per Engine.IO session. Its `Session` (the same bounded queue, conflation and direct
writes as `/ws`) holds complete Engine.IO messages, so a frame is the same string on either transport:
over WebSocket it is written at once (or queued and drained by a writer task that exists only while
something is queued); over polling it waits for the client's next GET, which takes everything queued.

Authentication is per namespace, in its connect packet (`auth.token`), else the session cookie or
`Authorization` header of the request that opened the Engine.IO session; a foreign Origin, a bad token,
and the connection caps refuse the namespace with a `connect_error` carrying our error code. An
Engine.IO session with no namespace connected within `CONNECT_TIMEOUT_S` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from openmanager.core import engineio as eio
from openmanager.core.errors import OpenManagerError
from openmanager.core.protocol import CloseCode
from openmanager.core.socketio import SocketIOError, disconnect_message, parse_packet
from openmanager.gateway.auth import origin_allowed
from openmanager.gateway.limits import client_address
from openmanager.gateway.sio_namespaces import Namespaces
from openmanager.gateway.sio_streams import SioStreams
from openmanager.gateway.wsfast import BIND_DIRECT, DEFLATE_SAVED, RTT, SEND_NOW
from openmanager.pipeline.session import Session

if TYPE_CHECKING:
    from openmanager.config import Settings
    from openmanager.gateway.auth import Principal
    from openmanager.gateway.streaming import StreamGate
    from openmanager.pipeline.subscriptions import Streams

log = logging.getLogger(__name__)

SIO_PATH = "/socket.io/"
SIO_PATHS = frozenset({SIO_PATH, SIO_PATH.rstrip("/")})
CONNECT_TIMEOUT_S = 10.0
"""An Engine.IO session must connect a namespace within this time, or it is closed."""
TEXT_HEADERS = [(b"content-type", b"text/plain; charset=UTF-8"), (b"cache-control", b"no-store")]


class EngineSocket:
    """One Engine.IO session and its transport state."""

    __slots__ = ("__weakref__", "address", "closed", "counted", "endpoint", "heartbeat", "namespaces", "origin_ok",
                 "poll_wake", "polling", "principal", "reader", "session", "sid", "timer", "writer", "ws_send")

    def __init__(self, endpoint: SocketIOEndpoint, session: Session, principal: Principal | None,
                 origin_ok: bool, address: str, *, polling: bool) -> None:
        self.endpoint = endpoint
        self.sid = secrets.token_urlsafe(15)
        self.session = session
        self.principal = principal  # from the handshake's cookie or Authorization header, if any
        self.origin_ok = origin_ok
        self.address = address
        self.polling = polling
        self.namespaces: dict[str, Any] = {}  # nsp -> its `sio_namespaces.Connected`
        self.counted = False  # counted in the hub's sessions and stream limits (a namespace connected)
        self.closed = False
        self.poll_wake: asyncio.Event | None = None
        self.ws_send: Send | None = None
        self.reader: asyncio.Task[Any] | None = None
        self.writer: asyncio.Task[None] | None = None
        now = time.monotonic()
        self.heartbeat = eio.Heartbeat(endpoint.ping_interval_ms / 1000, endpoint.ping_timeout_ms / 1000, now)
        loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = loop.call_at(loop.time() + CONNECT_TIMEOUT_S, self._unconnected)
        session.on_pending = self.on_pending

    # -- heartbeat --------------------------------------------------------------------------------

    def admitted(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self._schedule()

    def _unconnected(self) -> None:
        if not self.namespaces:
            self.close(CloseCode.NORMAL, "no namespace connected")
            return
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, self.heartbeat.next_at() - time.monotonic())
        self.timer = loop.call_at(loop.time() + delay, self._beat)

    def _beat(self) -> None:
        action = self.heartbeat.due(time.monotonic())
        if action == "timeout":
            self.close(CloseCode.INTERNAL_ERROR, "ping timeout")
            return
        if action == "ping":
            self.session.send(eio.PING)
        self._schedule()

    # -- the queue's writer -----------------------------------------------------------------------

    def on_pending(self) -> None:
        """Something was queued or the session closed: wake the poll, or start a WebSocket writer."""
        if self.polling:
            if self.poll_wake is not None:
                self.poll_wake.set()
            elif self.session.closing:
                self.finish()
            return
        writer = self.writer
        if self.ws_send is not None and (writer is None or writer.done()):
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        session = self.session
        try:
            await session.drain(self._ws_write)
        except (RuntimeError, OSError):
            session.close(CloseCode.CONNECTION_LOST, "connection lost")
        if session.closing and self.reader is not None and not self.reader.done():
            self.reader.cancel()

    async def _ws_write(self, frame: str | bytes) -> None:
        assert self.ws_send is not None
        if isinstance(frame, bytes):
            await self.ws_send({"type": "websocket.send", "bytes": frame})
        else:
            await self.ws_send({"type": "websocket.send", "text": frame})

    def use_websocket(self, scope: Scope, send: Send) -> None:
        """Frames go over this WebSocket from now on (a new session, or the upgrade completed)."""
        self.polling = False
        self.ws_send = send
        session = self.session
        extensions = scope.get("extensions") or {}
        session.send_now = extensions.get(SEND_NOW)
        session.rtt = extensions.get(RTT)
        session.take_deflate_saved = extensions.get(DEFLATE_SAVED)
        bind_direct = extensions.get(BIND_DIRECT)
        if bind_direct is not None:
            session.attach_transport(*bind_direct(session))
        if self.poll_wake is not None:
            self.poll_wake.set()
        if len(session.queue):
            self.on_pending()

    # -- packets ----------------------------------------------------------------------------------

    async def receive_packet(self, packet: eio.Packet) -> None:
        """Handle one Engine.IO packet from the client. Raises EngineIOError / SocketIOError for a packet
        the protocol does not allow (the caller closes the session, as the reference server does)."""
        kind = packet.type
        if kind == eio.PONG:
            self.heartbeat.pong(time.monotonic())
        elif kind == eio.MESSAGE:
            if isinstance(packet.data, bytes):
                raise SocketIOError("binary messages are not supported", code="unsupported_binary")
            await self.endpoint.namespaces.receive(self, parse_packet(packet.data))
        elif kind == eio.CLOSE:
            self.close(CloseCode.NORMAL, "closed by the client")
        elif kind != eio.NOOP:
            raise eio.EngineIOError(f"unexpected packet {kind!r}")

    def send(self, message: str) -> None:
        self.session.send(message)

    # -- the end ----------------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """End the session: its transport closes (a pending poll answers `1`), subscriptions end."""
        self.session.close(code, reason)  # wakes the writer or the poll (on_pending)
        if self.polling and self.poll_wake is None:
            self.finish()

    def finish(self) -> None:
        """Release everything the session holds (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        endpoint, session = self.endpoint, self.session
        if session.close_code is None:
            session.close(CloseCode.CONNECTION_LOST, "connection lost")
        endpoint.streams.detach_all(session)
        endpoint.sockets.pop(self.sid, None)
        service, gate = endpoint.service, endpoint.gate
        if self.counted:
            service.close(session)  # after the adapter's detach_all: no fan-out shape is left to leave
            gate.auth.unbind(session)
            gate.limits.close_stream(self.address, session.user)
        self.namespaces.clear()
        writer = self.writer
        if writer is not None and not writer.done():
            writer.cancel()

    def goodbye(self) -> list[str]:
        """What to send before closing: a server-side disconnect of each namespace when the credential
        was revoked (the client then does not reconnect), else nothing (it reconnects and resumes)."""
        if self.session.close_code == CloseCode.UNAUTHORIZED:
            return [disconnect_message(nsp) for nsp in self.namespaces]
        return []


class SocketIOEndpoint:
    """`/socket.io/` over the hub's streams (`Streams`, the session registry it shares with /ws and /sse)
    and their admission (`StreamGate`): the Engine.IO sessions, the namespaces and the streams adapter."""

    def __init__(self, service: Streams, gate: StreamGate, settings: Settings,
                 forwarded: ASGIApp | None = None) -> None:
        self.service, self.gate = service, gate
        self.forwarded = forwarded  # applies a trusted proxy's forwarded headers to the scope
        self.sockets: dict[str, EngineSocket] = {}
        self.streams = SioStreams(service, settings)
        self.namespaces = Namespaces(service, gate, settings, self.streams)
        self.ping_interval_ms = settings.socketio_ping_interval_ms
        self.ping_timeout_ms = settings.socketio_ping_timeout_ms
        self.max_payload = settings.max_frame_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Not a coroutine itself: it hands over the transport's, so a WebSocket's task keeps one frame of
        this module suspended for the connection's life. WebSockets come from `gateway.app.StreamFront`
        directly; polling requests through the HTTP middleware (body limit, access log, capacity gate),
        which has applied a trusted proxy's forwarded headers already."""
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send)
        return self._polling(scope, receive, send)

    async def _handshake(self, scope: Scope, receive: Receive, send: Send) -> eio.Handshake | None:
        """The request's Engine.IO query, checked (refused: answered here, and None)."""
        if self.forwarded is not None and scope["type"] == "websocket":
            await self.forwarded(scope, receive, send)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            handshake = eio.parse_handshake(query)
            if (scope["type"] == "websocket") != (handshake.transport == "websocket"):
                raise eio.EngineIOError("transport does not match the request", code="bad_request", number=3)
        except eio.EngineIOError as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _answer(send, exc.status, eio.error_body(exc), json=True)
            return None
        return handshake

    async def _open(self, scope: Scope, *, polling: bool) -> EngineSocket:
        conn = HTTPConnection(scope)
        gate, service = self.gate, self.service
        headers = {k.lower(): v for k, v in conn.headers.items()}
        try:
            principal = await gate.auth.authenticate(headers, {}, conn.cookies, conn.url.port)
        except OpenManagerError:
            log.warning("authentication failed: the user store is unavailable", exc_info=True)
            principal = None
        client = scope.get("client")
        session = Session(user="", transport="socketio", remote=f"{client[0]}:{client[1]}" if client else "",
                          stats=service.stats, limits=service.queue_limits)
        sock = EngineSocket(self, session, principal, origin_allowed(headers, gate.allowed_origins),
                            client_address(session.remote), polling=polling)
        self.sockets[sock.sid] = sock
        return sock

    def open_packet(self, sock: EngineSocket) -> str:
        return eio.open_packet(sock.sid, upgrades=["websocket"] if sock.polling else [],
                               ping_interval_ms=self.ping_interval_ms, ping_timeout_ms=self.ping_timeout_ms,
                               max_payload=self.max_payload)

    # -- WebSocket ----------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One WebSocket: a new Engine.IO session, or the upgrade of a polling one; then its read loop
        (here, not in a coroutine it awaits: this frame stays suspended for the connection's life)."""
        handshake = await self._handshake(scope, receive, send)
        if handshake is None or (await receive())["type"] != "websocket.connect":
            return
        sid = handshake.sid
        if sid is None:
            sock = await self._open(scope, polling=False)
            await send({"type": "websocket.accept"})
            sock.ws_send = send
            sock.session.send_now = None
            await send({"type": "websocket.send", "text": self.open_packet(sock)})
            sock.use_websocket(scope, send)
        else:
            found = self.sockets.get(sid)
            if found is None or not found.polling or found.closed:
                await send({"type": "websocket.close", "code": 1008})
                return
            sock = found
            await send({"type": "websocket.accept"})
            if not await self._upgrade(sock, scope, receive, send):
                return
        scope.clear()  # nothing reads it after this; a connection lives for hours
        sock.reader = asyncio.current_task()
        try:
            while not sock.closed:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                payload = message.get("text")
                if payload is None:
                    payload = message.get("bytes") or b""
                await sock.receive_packet(eio.decode_packet(payload))
        except (eio.EngineIOError, SocketIOError) as exc:
            log.debug("socket.io %s: %s (%s); closing", sock.sid, exc.message, exc.code)
            sock.session.close(CloseCode.INVALID_MESSAGE, exc.code)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not sock.session.closing or task is None:
                raise
            task.uncancel()
        except (RuntimeError, OSError):
            pass
        finally:
            goodbye = sock.goodbye()
            code = sock.session.close_code
            sock.finish()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                for text in goodbye:
                    await send({"type": "websocket.send", "text": text})
                if code is not None and code != CloseCode.CONNECTION_LOST:
                    await send({"type": "websocket.close", "code": code, "reason": sock.session.close_reason})

    async def _upgrade(self, sock: EngineSocket, scope: Scope, receive: Receive, send: Send) -> bool:
        """The probe (`2probe` → `3probe`, a noop to end the pending poll), then `5`: the session moves to
        this WebSocket. False when the client gave up (the polling session goes on)."""
        probed = False
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return False
            text = message.get("text")
            if text == "2probe" and not probed:
                probed = True
                await send({"type": "websocket.send", "text": "3probe"})
                sock.session.send(eio.NOOP)
            elif text == eio.UPGRADE and probed and not sock.closed:
                sock.use_websocket(scope, send)
                return True
            else:
                await send({"type": "websocket.close", "code": 1008})
                return False

    # -- HTTP long-polling ----------------------------------------------------------------------------

    async def _polling(self, scope: Scope, receive: Receive, send: Send) -> None:
        handshake = await self._handshake(scope, receive, send)
        if handshake is None:
            return
        sid = handshake.sid
        method = scope.get("method", "GET")
        if sid is None:
            if method != "GET":
                exc = eio.EngineIOError("bad handshake method", code="bad_request", number=2)
                await _answer(send, exc.status, eio.error_body(exc), json=True)
                return
            sock = await self._open(scope, polling=True)
            await _answer(send, 200, self.open_packet(sock).encode())
            return
        found = self.sockets.get(sid)
        if found is None or found.closed:
            exc = eio.EngineIOError("session ID unknown", code="unknown_session", number=1)
            await _answer(send, exc.status, eio.error_body(exc), json=True)
            return
        if method == "GET":
            await self._poll(found, receive, send)
        elif method == "POST":
            await self._post(found, receive, send)
        else:
            exc = eio.EngineIOError("bad request method", code="bad_request", number=3)
            await _answer(send, exc.status, eio.error_body(exc), json=True)

    async def _poll(self, sock: EngineSocket, receive: Receive, send: Send) -> None:
        """Answer with everything queued, waiting for something when nothing is."""
        if not sock.polling:  # upgraded meanwhile: frames go over the WebSocket now
            await _answer(send, 200, eio.NOOP.encode())
            return
        if sock.poll_wake is not None:  # a second poll at once
            sock.close(CloseCode.INVALID_MESSAGE, "overlapping polls")
            exc = eio.EngineIOError("a poll is already pending", code="bad_request", number=3)
            await _answer(send, exc.status, eio.error_body(exc), json=True)
            return
        session = sock.session
        wake = sock.poll_wake = asyncio.Event()
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while not len(session.queue) and not session.closing and sock.polling:
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                wake.clear()
                if gone.done():
                    return
            frames: list[str | bytes] = []

            async def collect(frame: str | bytes) -> None:
                frames.append(frame)

            if session.closing:
                frames = [*sock.goodbye(), eio.CLOSE]
            elif not sock.polling:  # upgraded meanwhile: the WebSocket's writer takes the queue
                frames = [eio.NOOP]
            else:
                await session.drain(collect)
            await _answer(send, 200, eio.encode_payload(frames).encode())
        finally:
            gone.cancel()
            sock.poll_wake = None
            if session.closing:
                sock.finish()

    async def _post(self, sock: EngineSocket, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_payload:
                exc = eio.EngineIOError(f"payload over {self.max_payload} bytes", code="payload_too_large",
                                        status=413, number=3)
                await _answer(send, exc.status, eio.error_body(exc), json=True)
                sock.close(CloseCode.MESSAGE_TOO_BIG, "payload too large")
                return
            if not message.get("more_body"):
                break
        try:
            for packet in eio.decode_payload(body.decode("utf-8")):
                await sock.receive_packet(packet)
        except UnicodeDecodeError:
            exc = eio.EngineIOError("payload is not UTF-8")
            await _answer(send, exc.status, eio.error_body(exc), json=True)
            sock.close(CloseCode.INVALID_MESSAGE, exc.code)
            return
        except (eio.EngineIOError, SocketIOError) as err:
            status = err.status if isinstance(err, eio.EngineIOError) else 400
            number = err.number if isinstance(err, eio.EngineIOError) else 3
            await _answer(send, status, eio.error_body(eio.EngineIOError(err.message, code=err.code,
                                                                            number=number)), json=True)
            sock.close(CloseCode.INVALID_MESSAGE, err.code)
            return
        await _answer(send, 200, b"ok")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answer(send: Send, status: int, body: bytes, *, json: bool = False) -> None:
    headers = [(b"content-type", b"application/json")] if json else list(TEXT_HEADERS)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
