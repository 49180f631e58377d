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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from openmanager import __version__
from openmanager.core.encoding import encode, pack, unpack
from openmanager.core.errors import OpenManagerError, ValidationError
from openmanager.core.filters import SERVED_TOPICS, TOPICS, parse_filter
from openmanager.gateway.wsfast import RTT, SEND_NOW
from openmanager.pipeline.session import Session

if TYPE_CHECKING:
    from openmanager.hub import Hub

log = logging.getLogger(__name__)

SUBPROTOCOL_JSON = "openmanager.v1.json"
SUBPROTOCOL_MSGPACK = "openmanager.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK)
ENCODINGS = ("json", "delta")
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
SNAPSHOT_TOPICS = frozenset({"metrics", "fleet", "alerts", "system"})


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


async def websocket_endpoint(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    headers = {k.lower(): v for k, v in ws.headers.items()}
    offered = ws.scope.get("subprotocols") or []
    subprotocol = next((p for p in offered if p in SUBPROTOCOLS), None)  # the client's order of preference
    try:
        principal = await hub.auth.authenticate_connection(ws)
    except OpenManagerError:  # the user store failed
        log.warning("authentication failed: the user store is unavailable", exc_info=True)
        await ws.accept(subprotocol=subprotocol)
        await ws.close(1011, "authentication unavailable")
        return
    if principal is None:
        await ws.accept(subprotocol=subprotocol)
        await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
        return
    if not origin_allowed(headers, hub.allowed_origins):
        await ws.accept(subprotocol=subprotocol)
        await ws.close(CLOSE_FORBIDDEN_ORIGIN, "origin not allowed")
        return
    await ws.accept(subprotocol=subprotocol)
    ws.scope.update(user=principal.user, role=principal.role, principal=principal)
    client = ws.client
    session = Session(
        user=principal.user,
        transport="ws",
        remote=f"{client.host}:{client.port}" if client else "",
        stats=hub.stats,
        limits=hub.queue_limits,
        binary=subprotocol == SUBPROTOCOL_MSGPACK,
    )
    extensions = ws.scope.get("extensions") or {}
    session.send_now = extensions.get(SEND_NOW)
    session.rtt = extensions.get(RTT)
    hub.sessions[session.id] = session
    hub.auth.bind(session, principal)  # revoking its credential closes it (4401)
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
    # Two tasks per connection: this one reads, the writer drains the session's queue. When the writer
    # ends (closing, or the peer went away) it interrupts the read.
    reader = asyncio.current_task()
    assert reader is not None
    writer = asyncio.create_task(session.run_writer(_writer(ws)), name=f"ws-writer-{session.id}")
    writer_ended = False

    def on_writer_end(_: asyncio.Task[None]) -> None:
        nonlocal writer_ended
        writer_ended = True
        reader.cancel()

    writer.add_done_callback(on_writer_end)
    try:
        await _read_loop(ws, hub, session)
    except asyncio.CancelledError:
        if not writer_ended:
            raise
        reader.uncancel()
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        writer.remove_done_callback(on_writer_end)
        hub.fanout.detach_all(session)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
            await writer
        hub.sessions.pop(session.id, None)
        hub.auth.unbind(session)
        hub.stats.connections["ws"] -= 1
    if session.close_code is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await ws.close(session.close_code, session.close_reason)


def _reply(session: Session, message: dict[str, Any]) -> None:
    """Send a reply in the connection's wire format (JSON text, or msgpack binary)."""
    session.send(pack(message) if session.binary else encode(message))


def _writer(ws: WebSocket) -> Callable[[str | bytes], Awaitable[None]]:
    async def write(frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_text(frame)

    return write


async def _read_loop(ws: WebSocket, hub: Hub, session: Session) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        payload = message.get("text")
        if payload is None:
            payload = message.get("bytes") or b""
        await handle_message(hub, session, payload)


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


async def _subscribe(hub: Hub, session: Session, msg: dict[str, Any], request_id: Any) -> None:
    topic = msg.get("topic")
    if not isinstance(topic, str) or topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic!r} (topics: {', '.join(TOPICS)})", code="unknown_topic")
    if topic not in SERVED_TOPICS:
        raise ProtocolError(f"topic {topic!r} is not served by this hub yet", code="topic_unavailable")
    encoding = msg.get("encoding", "json")
    if encoding not in ENCODINGS:
        raise ValidationError(f"unknown encoding {encoding!r} (json, delta)", code="invalid_encoding")
    if encoding == "delta" and topic != "metrics":
        raise ValidationError("the delta encoding is for the metrics topic", code="invalid_encoding")
    if session.binary:  # the wire format is part of the shape: one encoded frame per shape
        encoding = "msgpack" if encoding == "json" else "delta+msgpack"
    flt = parse_filter(topic, msg.get("filter"), user=session.user)
    since = msg.get("since")
    if since is not None and not isinstance(since, str):
        raise ValidationError("since must be a cursor string", code="invalid_cursor")
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
