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
from urllib.parse import urlsplit

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from openmanager import __version__
from openmanager.core.encoding import encode, pack, unpack
from openmanager.core.errors import OpenManagerError, ValidationError
from openmanager.core.filters import TopicFilter, filter_cost
from openmanager.core.protocol import SNAPSHOT_TOPICS, SUBPROTOCOL_MSGPACK, SUBPROTOCOLS, TOPICS, CloseCode
from openmanager.gateway.compiling import parse_filter_async
from openmanager.gateway.limits import client_address
from openmanager.gateway.wsfast import BIND_DIRECT, DEFLATE_SAVED, RTT, SEND_NOW
from openmanager.pipeline.session import Session
from openmanager.pipeline.shape import shape_id

if TYPE_CHECKING:
    from openmanager.gateway.auth import Principal
    from openmanager.hub import Hub

log = logging.getLogger(__name__)

WS_PATH = "/ws"
ENCODINGS = ("json", "delta")


def origin_allowed(headers: dict[str, str], allowed: frozenset[str]) -> bool:
    """Same-origin (Origin host equals Host), no Origin (non-browser clients), or an allowed origin."""
    origin = headers.get("origin")
    if not origin:
        return True
    if origin.rstrip("/") in allowed:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


class ProtocolError(OpenManagerError):
    code = "invalid_message"


async def websocket_endpoint(
    scope: Scope, receive: Receive, send: Send, hub: Hub, forwarded: ASGIApp | None = None
) -> None:
    """One `/ws` connection, as a plain ASGI callable (see `gateway.app.StreamFront`): no HTTP middleware
    or routing stays on its stack, and no task of its own stays alive except while a write waits.
    `forwarded` is awaited first to apply trusted proxy headers to the scope. The read loop is here,
    not in a method it awaits: this frame stays suspended for the connection's life, and one is
    enough."""
    if forwarded is not None:
        await forwarded(scope, receive, send)
    admitted = await _admit(scope, receive, send, hub)
    if admitted is None:
        return
    conn = _Connection(hub, send, *admitted)
    session = conn.open()
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            payload = message.get("text")
            if payload is None:
                payload = message.get("bytes") or b""
            await handle_message(hub, session, payload)
    except asyncio.CancelledError:
        if not conn.interrupted or conn.reader is None:
            raise
        conn.reader.uncancel()
    except (RuntimeError, OSError):
        pass
    finally:
        await conn.finish()
    await conn.send_close()


async def _admit(scope: Scope, receive: Receive, send: Send, hub: Hub) -> tuple[Session, Principal] | None:
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
        principal = await hub.auth.authenticate_connection(conn)
        if principal is None:
            refused = (CloseCode.UNAUTHORIZED, "unauthorized")
        elif not origin_allowed({k.lower(): v for k, v in conn.headers.items()}, hub.allowed_origins):
            refused = (CloseCode.FORBIDDEN, "origin not allowed")
    except OpenManagerError:  # the user store failed
        log.warning("authentication failed: the user store is unavailable", exc_info=True)
        principal, refused = None, (CloseCode.INTERNAL_ERROR, "authentication unavailable")
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    client = scope.get("client")
    if refused is None and principal is not None:  # the connection caps (1013); counted until `finish`
        limits = hub.limits
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
        stats=hub.stats,
        limits=hub.queue_limits,
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

    __slots__ = ("hub", "interrupted", "principal", "reader", "send", "session", "writer")

    def __init__(self, hub: Hub, send: Send, session: Session, principal: Principal) -> None:
        self.hub = hub
        self.send = send
        self.session = session
        self.principal = principal
        self.reader: asyncio.Task[Any] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.interrupted = False

    def open(self) -> Session:
        """Register the session with the hub and welcome the client; answers the session."""
        hub, session = self.hub, self.session
        self.reader = asyncio.current_task()
        session.on_pending = self.on_pending
        hub.sessions[session.id] = session
        hub.auth.bind(session, self.principal)  # revoking its credential closes it (4401)
        hub.stats.connections["ws"] += 1
        _reply(
            session,
            {
                "type": "welcome",
                "session": session.id,
                "server_time": int(time.time() * 1000),
                "heartbeat_ms": hub.settings.heartbeat_ms,
                "version": __version__,
            },
        )
        return session

    async def finish(self) -> None:
        """The read loop ended: leave every subscription, stop the writer, unregister."""
        hub, session = self.hub, self.session
        session.on_pending = None
        hub.fanout.detach_all(session)
        writer = self.writer
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError, OSError):
                await writer
        hub.sessions.pop(session.id, None)
        hub.auth.unbind(session)
        hub.limits.close_stream(client_address(session.remote), session.user)
        hub.stats.connections["ws"] -= 1

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


def _reply(session: Session, message: dict[str, Any]) -> None:
    """Send a reply in the connection's wire format (JSON text, or msgpack binary)."""
    session.send(pack(message) if session.binary else encode(message))


async def handle_message(hub: Hub, session: Session, payload: str | bytes) -> None:
    """Answer one client message; every problem becomes an `error` reply."""
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
            await _subscribe(hub, session, msg, request_id)
        elif kind == "unsubscribe":
            _unsubscribe(hub, session, msg, request_id)
        elif kind == "ping":
            _reply(session, {"type": "pong", "id": request_id, "server_time": int(time.time() * 1000)})
        else:
            raise ProtocolError(f"unknown message type {kind!r}", code="unknown_type")
    except OpenManagerError as exc:
        reply: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
        if request_id is not None:
            reply["id"] = request_id
        position = getattr(exc, "position", None)
        if position is not None:
            reply["position"] = position
        _reply(session, reply)


def _check_room(hub: Hub, session: Session, flt: TopicFilter) -> None:
    """Whether `session` may add a subscription with filter `flt`: it holds fewer than
    `subscriptions_per_connection`, and the filters of all its subscriptions would cost at most
    `subscription_cost_budget` together (per server evaluation: `core.rules.limits.cost`). Raises
    ValidationError (`too_many_subscriptions`, `cost_budget_exceeded`) otherwise."""
    settings = hub.settings
    held = len(session.subs)
    if held >= settings.subscriptions_per_connection:
        raise ValidationError(
            f"this connection already has {held} subscriptions, the most allowed "
            f"(subscriptions_per_connection); unsubscribe one first",
            code="too_many_subscriptions",
        )
    added = filter_cost(flt)
    if added:
        spent = sum(filter_cost(shape.filter) for shape in session.subs.values())
        if spent + added > settings.subscription_cost_budget:
            raise ValidationError(
                f"this filter costs {added} and this connection's filters already cost {spent}: "
                f"more than its budget of {settings.subscription_cost_budget} "
                f"(subscription_cost_budget); unsubscribe one or use shorter windows",
                code="cost_budget_exceeded",
            )


async def _subscribe(hub: Hub, session: Session, msg: dict[str, Any], request_id: Any) -> None:
    # Let the rest of the hub run between one client's subscribes, however fast they arrive.
    await asyncio.sleep(0)
    topic = msg.get("topic")
    if not isinstance(topic, str) or topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic!r} (topics: {', '.join(TOPICS)})", code="unknown_topic")
    encoding = msg.get("encoding", "json")
    if encoding not in ENCODINGS:
        raise ValidationError(f"unknown encoding {encoding!r} (json, delta)", code="invalid_encoding")
    if encoding == "delta" and topic != "metrics":
        raise ValidationError("the delta encoding is for the metrics topic", code="invalid_encoding")
    if session.binary:  # the wire format is part of the shape: one encoded frame per shape
        encoding = "msgpack" if encoding == "json" else "delta+msgpack"
    flt = await parse_filter_async(topic, msg.get("filter"), user=session.user,
                                   limits=hub.settings.filter_limits())
    since = msg.get("since")
    if since is not None and not isinstance(since, str):
        raise ValidationError("since must be a cursor string", code="invalid_cursor")
    if shape_id(flt.key, encoding) not in session.subs:
        _check_room(hub, session, flt)
    shape = hub.fanout.shape_for(topic, flt, encoding)
    reply: dict[str, Any] = {"type": "subscribed", "id": request_id, "sub": shape.sub, "topic": topic}
    if shape.sub in session.subs:
        reply["cursor"] = hub.broker.head(topic)
        _reply(session, reply)
        return
    if since is None or shape.delta is not None:  # delta: a resume always starts from a fresh snapshot
        # From here to attach nothing awaits, so no event can slip between the snapshot and live.
        reply["cursor"] = hub.broker.head(topic)
        if since is not None:
            reply["recovered"] = False
        _reply(session, reply)
        hub.fanout.attach(session, shape)
        if topic in SNAPSHOT_TOPICS:
            _send_snapshot(hub, session, shape, reply["cursor"])
        return
    # Resume: attach first, holding live events, since the replay may suspend (Redis); the events held
    # meanwhile are released after the replay (or the snapshot), without the ones already covered.
    hub.fanout.attach(session, shape, hold=True)
    missed = await hub.broker.replay(topic, since)
    reply["cursor"] = head = hub.broker.head(topic)
    reply["recovered"] = missed is not None
    _reply(session, reply)
    if missed is not None:
        hub.fanout.release(session, shape, missed[-1].cursor if missed else since, missed)
        return
    if topic in SNAPSHOT_TOPICS:
        _send_snapshot(hub, session, shape, head)
    hub.fanout.release(session, shape, head)


def _send_snapshot(hub: Hub, session: Session, shape: Any, cursor: str) -> None:
    if shape.delta is not None and shape.delta.seeded:  # the shape's base, encoded once per event
        session.send(shape.base_snapshot_frame())
        return
    data = shape.render_snapshot(hub.snapshot(shape.topic), hub.state)
    if shape.delta is not None:
        cursor, data = shape.delta_snapshot(data, cursor)
    session.send(shape.message({"type": "snapshot", "sub": shape.sub, "cursor": cursor, "data": data}))


def _unsubscribe(hub: Hub, session: Session, msg: dict[str, Any], request_id: Any) -> None:
    sub = msg.get("sub")
    shape = session.subs.get(sub) if isinstance(sub, str) else None
    if shape is None:
        raise ProtocolError(f"no subscription {sub!r} on this connection", code="unknown_subscription")
    hub.fanout.detach(session, shape)
    _reply(session, {"type": "unsubscribed", "id": request_id, "sub": shape.sub})
