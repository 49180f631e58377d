"""The `/ws` endpoint: the protocol of PROTOCOL.md over one WebSocket connection.

Every reply and event goes through the session's bounded queue, so a connection's messages keep their
order. Bad client messages get an `error` and the connection stays open; a bad token closes with 4401,
a foreign Origin with 4403, an oversized frame with 1009 (enforced by the server's frame limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from openmanager import __version__
from openmanager.core.encoding import encode, pack, unpack
from openmanager.core.errors import OpenManagerError
from openmanager.core.protocol import SUBPROTOCOL_MSGPACK, SUBPROTOCOLS, CloseCode
from openmanager.gateway.auth import origin_allowed
from openmanager.gateway.compiling import parse_filter_async
from openmanager.gateway.limits import client_address
from openmanager.gateway.streaming import StreamGate
from openmanager.gateway.wsfast import BIND_DIRECT, DEFLATE_SAVED, RTT, SEND_NOW
from openmanager.pipeline.session import Session
from openmanager.pipeline.subscriptions import (
    MessageWire,
    ProtocolError,
    Streams,
    SubscribeRequest,
    Subscriptions,
    subscribe_since,
    subscribe_target,
)

if TYPE_CHECKING:
    from openmanager.gateway.auth import Principal

__all__ = ["WS_PATH", "ProtocolError", "handle_message", "origin_allowed", "websocket_endpoint"]

log = logging.getLogger(__name__)

WS_PATH = "/ws"


async def websocket_endpoint(
    scope: Scope, receive: Receive, send: Send, streams: Streams, gate: StreamGate,
    forwarded: ASGIApp | None = None,
) -> None:
    """One `/ws` connection, as a plain ASGI callable (see `gateway.app.StreamFront`): no HTTP middleware
    or routing stays on its stack, and no task of its own stays alive except while a write waits.
    `forwarded` is awaited first to apply trusted proxy headers to the scope. The read loop is here,
    not in a method it awaits: this frame stays suspended for the connection's life, and one is
    enough."""
    if forwarded is not None:
        await forwarded(scope, receive, send)
    admitted = await _admit(scope, receive, send, streams, gate)
    if admitted is None:
        return
    conn = _Connection(streams, gate, send, *admitted)
    subs = conn.open()
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            payload = message.get("text")
            if payload is None:
                payload = message.get("bytes") or b""
            await handle_message(subs, payload)
    except asyncio.CancelledError:
        if not conn.interrupted or conn.reader is None:
            raise
        conn.reader.uncancel()
    except (RuntimeError, OSError):
        pass
    finally:
        await conn.finish()
    await conn.send_close()


async def _admit(
    scope: Scope, receive: Receive, send: Send, streams: Streams, gate: StreamGate
) -> tuple[Session, Principal] | None:
    """The handshake: authenticate, check the Origin, accept; a refusal is accepted, then closed with its
    code (4401, 4403, 1011 when the user store failed), and answers None."""
    offered = scope.get("subprotocols") or []
    subprotocol = next((p for p in offered if p in SUBPROTOCOLS), None)  # the client's order of preference
    connect = await receive()
    if connect["type"] != "websocket.connect":
        return None
    conn = HTTPConnection(scope)
    refused: tuple[int, str] | None = None
    try:
        principal = await gate.auth.authenticate_connection(conn)
        if principal is None:
            refused = (CloseCode.UNAUTHORIZED, "unauthorized")
        elif not origin_allowed({k.lower(): v for k, v in conn.headers.items()}, gate.allowed_origins):
            refused = (CloseCode.FORBIDDEN, "origin not allowed")
    except OpenManagerError:  # the user store failed
        log.warning("authentication failed: the user store is unavailable", exc_info=True)
        principal, refused = None, (CloseCode.INTERNAL_ERROR, "authentication unavailable")
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    client = scope.get("client")
    if refused is None and principal is not None:  # the connection caps (1013); counted until `finish`
        limits = gate.limits
        why = limits.refuse_stream(principal.role) or limits.open_stream(client[0] if client else "", principal.user)
        if why is not None:
            refused = (CloseCode.TRY_AGAIN_LATER, why)
    if refused is not None or principal is None:
        code, reason = refused or (CloseCode.UNAUTHORIZED, "unauthorized")
        await send({"type": "websocket.close", "code": code, "reason": reason})
        return None
    session = Session(
        user=principal.user,
        transport="ws",
        remote=f"{client[0]}:{client[1]}" if client else "",
        stats=streams.stats,
        limits=streams.queue_limits,
        binary=subprotocol == SUBPROTOCOL_MSGPACK,
    )
    extensions = scope.get("extensions") or {}
    session.send_now = extensions.get(SEND_NOW)
    session.rtt = extensions.get(RTT)
    session.take_deflate_saved = extensions.get(DEFLATE_SAVED)
    bind_direct = extensions.get(BIND_DIRECT)
    if bind_direct is not None:
        session.attach_transport(*bind_direct(session))
    # Nothing reads the scope once the connection is admitted (uvicorn only logs it during the
    # handshake), and a connection lives for hours: headers, query string (a `?token=`) and the rest
    # would be kept ~1 KB per connection, a credential among them, for nothing.
    scope.clear()
    return session, principal


class _Connection:
    """An admitted connection. The task that runs `websocket_endpoint` reads; frames the transport could not take at
    once wait in the session's queue, and a writer task exists only while that queue is drained. When
    the session closes (or a write fails: the peer went away) the writer interrupts the read."""

    __slots__ = ("gate", "interrupted", "principal", "reader", "send", "session", "streams", "subs", "writer")

    def __init__(self, streams: Streams, gate: StreamGate, send: Send, session: Session, principal: Principal) -> None:
        self.streams = streams
        self.gate = gate
        self.send = send
        self.session = session
        self.principal = principal
        self.reader: asyncio.Task[Any] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.interrupted = False
        self.subs = streams.subscriptions(session, MessageWire.MSGPACK if session.binary else MessageWire.JSON)

    def open(self) -> Subscriptions:
        """Register the session and welcome the client; answers the session's subscriptions."""
        session, subs = self.session, self.subs
        self.reader = asyncio.current_task()
        session.on_pending = self.on_pending
        self.streams.open(session)
        self.gate.auth.bind(session, self.principal)  # revoking its credential closes it (4401)
        _reply(
            subs,
            {
                "type": "welcome",
                "session": session.id,
                "server_time": int(time.time() * 1000),
                "heartbeat_ms": self.streams.heartbeat_ms,
                "version": __version__,
            },
        )
        return subs

    async def finish(self) -> None:
        """The read loop ended: leave every subscription, stop the writer, unregister."""
        session = self.session
        session.on_pending = None
        self.subs.close()
        writer = self.writer
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError, OSError):
                await writer
        self.gate.auth.unbind(session)
        self.gate.limits.close_stream(client_address(session.remote), session.user)

    async def send_close(self) -> None:
        """Close with the session's code, unless the peer is already gone (1006)."""
        session = self.session
        if session.close_code is not None and session.close_code != CloseCode.CONNECTION_LOST:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.send({"type": "websocket.close", "code": session.close_code,
                                     "reason": session.close_reason})

    def on_pending(self) -> None:
        """Something was queued or the session closed: start a writer unless one is running."""
        writer = self.writer
        if writer is None or writer.done():
            self.writer = asyncio.get_running_loop().create_task(self.drain())

    async def drain(self) -> None:
        session = self.session
        try:
            await session.drain(self.write)
        except (RuntimeError, OSError):  # the peer went away
            session.close(CloseCode.CONNECTION_LOST, "connection lost")
        if session.closing and not self.interrupted and self.reader is not None:
            self.interrupted = True
            self.reader.cancel()

    async def write(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.send({"type": "websocket.send", "bytes": frame})
        else:
            await self.send({"type": "websocket.send", "text": frame})


def _reply(subs: Subscriptions, message: dict[str, Any]) -> None:
    """Send a reply in the connection's wire format (JSON text, or msgpack binary)."""
    session = subs.session
    session.send(pack(message) if session.binary else encode(message))


async def handle_message(subs: Subscriptions, payload: str | bytes) -> None:
    """Answer one client message; every problem becomes an `error` reply."""
    session = subs.session
    request_id: Any = None
    try:
        if session.binary and isinstance(payload, bytes):
            try:
                msg = unpack(payload)
            except ValueError:
                raise ProtocolError("message is not valid msgpack", code="invalid_msgpack") from None
        else:
            try:
                msg = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise ProtocolError("message is not valid JSON", code="invalid_json") from None
        if not isinstance(msg, dict):
            raise ProtocolError("message must be a JSON object")
        request_id = msg.get("id")
        if request_id is not None and not isinstance(request_id, str | int):
            request_id = None
            raise ProtocolError("id must be a string or a number")
        kind = msg.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("message has no type", code="missing_type")
        if kind == "subscribe":
            await _subscribe(subs, msg, request_id)
        elif kind == "unsubscribe":
            shape = subs.unsubscribe(msg.get("sub"))
            _reply(subs, {"type": "unsubscribed", "id": request_id, "sub": shape.sub})
        elif kind == "ping":
            _reply(subs, {"type": "pong", "id": request_id, "server_time": int(time.time() * 1000)})
        else:
            raise ProtocolError(f"unknown message type {kind!r}", code="unknown_type")
    except OpenManagerError as exc:
        reply: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
        if request_id is not None:
            reply["id"] = request_id
        position = getattr(exc, "position", None)
        if position is not None:
            reply["position"] = position
        _reply(subs, reply)


async def _subscribe(subs: Subscriptions, msg: dict[str, Any], request_id: Any) -> None:
    """Validate a subscribe message, then run the subscription core's sequence (see
    `pipeline.subscriptions`): reply, snapshot or replay, then live events."""
    # Let the rest of the hub run between one client's subscribes, however fast they arrive.
    await asyncio.sleep(0)
    topic, encoding = subscribe_target(msg, binary=subs.session.binary)
    streams = subs.streams
    flt = await parse_filter_async(topic, msg.get("filter"), user=subs.session.user,
                                   limits=streams.limits.filter_limits)
    since = subscribe_since(msg)
    await streams.subscribe(subs, [SubscribeRequest(topic, flt, encoding, since, request_id)])
